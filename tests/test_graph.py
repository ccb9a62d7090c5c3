"""prepare_for_pruning: heads and attention protected, tracing bounded, untraceable modules found and named."""

import yoloslim  # noqa: F401  (offline setup before ultralytics)

import time

import pytest
import torch
import torch_pruning as tp
from torch import nn

from yoloslim.errors import UserError
from yoloslim.models import load_module
from yoloslim.prune import build_dependency_graph, prepare_for_pruning, tensors_only
from yoloslim.prune.graph import UntraceableModuleWarning


def prune_step(p, ratio: float = 0.3) -> None:
    """What the pruning engine does with a Prunable: one L1 MetaPruner step."""
    pruner = tp.pruner.MetaPruner(
        p.model, p.example_inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        global_pruning=True, ignored_layers=p.ignored_layers, forward_fn=p.forward_fn,
    )
    pruner.step()
    p.model.eval()


def params(model: nn.Module) -> int:
    return sum(t.numel() for t in model.parameters())


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_graph_builds_and_rewritten_and_hidden_head_convs_are_prunable(name):
    p = prepare_for_pruning(load_module(name), imgsz=64)
    protected = dict(p.protected)
    head = f"model.{len(p.model.model) - 1}"
    assert p.rewritten and not any(reason.startswith("could not") for reason in protected.values())
    assert sorted(n for n, r in protected.items() if r.startswith("prediction layer")) == sorted(
        [f"{head}.cv{k}.{level}.2" for k in (2, 3) for level in range(3)] + [f"{head}.dfl.conv"])

    graph = build_dependency_graph(p)
    roots = {graph._module2name[g[0].dep.target.module] for g in graph.get_all_groups()}
    assert any(r.endswith(".first.conv") for r in roots) and any(r.endswith(".second.conv") for r in roots)
    assert f"{head}.cv2.0.1.conv" in roots and any(r.startswith(f"{head}.cv3.") for r in roots)
    assert not any(r.startswith(tuple(n for n in protected if n.startswith(head))) for r in roots)
    if name.startswith("yolo11"):  # C2PSA attention keeps its channels
        assert any("attention (Attention)" in reason for reason in protected.values())
        assert not any(".attn." in r for r in roots)


@pytest.mark.slow
def test_prepare_is_bounded_protects_the_rtdetr_decoder_and_prunes():
    model = load_module("rtdetr-l.yaml")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected_shape = tensors_only(model(x))[0].shape
    decoder = model.model[-1]
    decoder_outputs = {n: t.shape[0] for n, t in decoder.named_parameters()}

    started = time.monotonic()
    p = prepare_for_pruning(model, imgsz=64, trace_timeout=30)
    assert time.monotonic() - started < 60
    assert any(reason.startswith("head (RTDETRDecoder)") for _, reason in p.protected)
    assert decoder in p.ignored_layers

    before = params(model)
    prune_step(p)
    assert params(model) < 0.85 * before
    with torch.no_grad():
        assert tensors_only(model(x))[0].shape == expected_shape
    assert {n: t.shape[0] for n, t in decoder.named_parameters()} == decoder_outputs  # only inputs may shrink


class Stuck(nn.Module):
    """Stands for a module torch-pruning's tracing never returns from (it hangs whenever autograd records)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        if torch.is_grad_enabled():
            time.sleep(3600)
        return x + self.conv(x)


class Net(nn.Module):
    """Laid out like an ultralytics model: a layer list whose last entry is the head."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            Stuck(16),
            nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
            nn.Conv2d(32, 4, 1),
        )

    def forward(self, x):
        return self.model(x)


def test_hanging_module_is_found_protected_and_named_within_the_bound():
    model = Net()
    started = time.monotonic()
    with pytest.warns(UntraceableModuleWarning, match=r"protecting model.1 \(Stuck\)"):
        p = prepare_for_pruning(model, imgsz=32, trace_timeout=2)
    assert time.monotonic() - started < 40
    assert [n for n, _ in p.protected] == ["model.1", "model.3"]
    assert "did not finish within 2 s" in dict(p.protected)["model.1"]
    assert dict(p.protected)["model.3"].startswith("prediction layer (Conv2d)")

    prune_step(p, ratio=0.5)  # the stand-in keeps the trace away from Stuck; the rest prunes
    assert model.model[2][0].out_channels < 32 and model.model[1].conv.out_channels == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4, 32, 32)


def test_ignore_by_name_and_class_and_unknown_entries():
    p = prepare_for_pruning(load_module("yolov8n.yaml"), imgsz=64, ignore=["model.2", "SPPF"])
    reasons = dict(p.protected)
    assert reasons["model.2"] == "ignored by the user" and reasons["model.9"] == "ignored by the user"
    with pytest.raises(UserError, match="model.99"):
        prepare_for_pruning(load_module("yolov8n.yaml"), ignore=["model.99"])


def test_tensors_only_drops_none():
    a, b = torch.zeros(1), torch.ones(2)
    assert [t.shape for t in tensors_only((a, [None, {"x": b}], None))] == [a.shape, b.shape]


@pytest.mark.slow
def test_attention_keeps_its_inner_widths_and_its_output_follows_the_block_where_it_can():
    p = prepare_for_pruning(load_module("yolo12n.yaml"), imgsz=64)  # AAttn: inner widths never meet the outer one
    reasons = dict(p.protected)
    assert reasons["model.6.m.0.0.attn.qkv"].startswith("attention inside (AAttn)")
    assert reasons["model.6.m.0.0.attn.pe"].startswith("attention inside (AAttn)")
    assert "model.6.m.0.0.attn" not in reasons and "model.6.m.0.0.attn.proj" not in reasons
    graph = build_dependency_graph(p)
    proj = p.model.get_submodule("model.6.m.0.0.attn.proj.conv")
    assert any(dep.target.module is proj and graph.is_out_channel_pruning_fn(dep.handler)
               for group in graph.get_all_groups() for dep, _ in group)

    p = prepare_for_pruning(load_module("yolo11n.yaml"), imgsz=64)  # Attention reshapes v to its input width
    assert "heads × head_dim (pruning around it failed: RuntimeError" in dict(p.protected)["model.10.body.0.attn"]
