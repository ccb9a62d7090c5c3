"""Every yoloslim method on YOLOv7: the planner methods, classic slimming with 8x round-up, what sparse training
derives from the graph (ELAN concats, RepConv's summed branches), and pruned checkpoints that reload in a
fresh process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from conftest import distill_one_epoch, outputs_in_fresh_process, pruned_once
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint
from yoloslim.models.anchor_specs import build_anchor_model
from yoloslim.prune.methods import METHODS
from yoloslim.report.metrics import count_params

IMGSZ = 64
NC = 3


def quiet(_: str) -> None:
    """Swallow planner progress lines."""


def spread(model: nn.Module, seed: int) -> nn.Module:
    """Spread-out BN γ and implicit tensors, as after training, so that rankings and index mapping mean something."""
    torch.manual_seed(seed)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.05, 1.0)
    for implicit in (*model.model[-1].ia, *model.model[-1].im):
        implicit.implicit.data.uniform_(0.5, 1.5)
    return model


def predictions(model: nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)[0]


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = spread(build_anchor_model("yolov7-tiny.yaml", nc=NC, verbose=False), 0)
    return save_model_checkpoint(model, tmp_path_factory.mktemp("yolov7") / "yolov7-tiny-3.pt")


@pytest.fixture(scope="module")
def pruned(tiny_pt: Path, shapes_data: str) -> Callable:
    """``pruned(method)``: yolov7-tiny pruned to 1.5x at 64 px, computed once per method for this module's tests."""
    return pruned_once(tiny_pt, shapes_data, speed_up=1.5, imgsz=IMGSZ)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_planner_method_prunes_it(method: str, pruned: Callable) -> None:
    result = pruned(method)
    assert result.reached, result.note
    assert 1.5 <= result.speed_up <= 1.5 * 1.05 and result.params < result.base_params
    assert predictions(result.model).shape == (1, 4 + NC, 252)
    head = result.model.model[-1]
    assert [conv.out_channels for conv in head.m] == [3 * (5 + NC)] * 3  # the output format keeps its width
    assert [ia.implicit.shape[1] for ia in head.ia] == [conv.in_channels for conv in head.m]


def test_only_the_prediction_convs_keep_their_width_and_implicit_offsets_follow_their_channels(
        tiny_pt: Path, pruned: Callable) -> None:
    result = pruned("l1")
    assert {name for name, _ in result.protected} == {"model.77.m.0", "model.77.m.1", "model.77.m.2"}
    source = checkpoint_module(read_checkpoint(tiny_pt)).model[-1]
    for before, after in zip(source.ia, result.model.model[-1].ia):
        kept, original = after.implicit.flatten().tolist(), before.implicit.flatten().tolist()
        assert len(kept) < len(original)
        positions = [original.index(value) for value in kept]  # values were drawn at random: each is unique
        assert positions == sorted(positions)  # a subset, in order: the offsets moved with their channels


@pytest.mark.slow
def test_yolov7_repconv_prunes_both_branches_together(shapes_data: str) -> None:
    from ultralytics.nn.modules import RepConv

    from yoloslim.prune.api import prune_model

    model = spread(build_anchor_model("yolov7.yaml", nc=NC, verbose=False), 1)
    result = prune_model(model, method="lamp", speed_up=1.5, imgsz=IMGSZ, log=quiet)
    repconvs = [m for m in result.model.modules() if isinstance(m, RepConv)]
    assert len(repconvs) == 3
    widths = [(m.conv1.conv.out_channels, m.conv2.conv.out_channels) for m in repconvs]
    assert all(a == b for a, b in widths) and any(a < b for a, b in zip((w for w, _ in widths), (256, 512, 1024)))
    assert predictions(result.model).shape == (1, 4 + NC, 252)


def test_sparse_training_finds_elan_and_repconv_couplings_in_the_graph() -> None:
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.selection import select_bns

    model = spread(build_anchor_model("yolov7.yaml", nc=NC, verbose=False), 2)
    prunable = prepare_for_pruning(model, imgsz=IMGSZ)
    selection = select_bns(model, build_dependency_graph(prunable), prunable.ignored_layers, False)
    tied = {name for name, reason in selection.excluded.items() if "residual" in reason}
    # RepConv sums its 3x3 and 1x1 branches: their BNs are tied, as a residual add ties its two sides
    assert {"model.102.conv1.bn", "model.102.conv2.bn", "model.104.conv1.bn", "model.104.conv2.bn"} <= tied
    assert not any(name.startswith(("model.1.", "model.24.", "model.51.")) for name in tied)  # plain ELAN/SPPCSPC
    assert "model.11.bn" in selection.penalized and "model.51.cv5.bn" in selection.penalized


@pytest.mark.slow
def test_pruned_and_slimmed_checkpoints_reload_in_a_fresh_process(tiny_pt: Path, pruned: Callable,
                                                                  tmp_path: Path) -> None:
    from yoloslim.prune.classic import slim_prune_model

    slimmed = slim_prune_model(tiny_pt, 0.3, shortcut="union", round_up=8, imgsz=IMGSZ)
    changed = [c for c in slimmed.channels if c["after"] < c["before"]]
    assert changed and all(c["after"] % 8 == 0 for c in changed)
    models = {"lamp": pruned("lamp").model, "slim": slimmed.model}
    paths = [save_model_checkpoint(m, tmp_path / f"{name}.pt") for name, m in models.items()]
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    base = count_params(checkpoint_module(read_checkpoint(tiny_pt)))
    for path, (count, out) in zip(paths, outputs_in_fresh_process(paths, x, tmp_path)):
        module = checkpoint_module(read_checkpoint(path)).eval()
        assert count == count_params(module) < base
        with torch.no_grad():
            assert torch.equal(out, module(x)[0])


@pytest.mark.slow
def test_one_epoch_with_ota_lowers_the_loss_and_validates(shapes_data: str, tmp_path: Path) -> None:
    import copy
    import math

    from yoloslim.engine.train import train
    from yoloslim.prune.calibration import calibration_batches

    def fixed_loss(model: nn.Module) -> float:
        """On fixed batches, with batch statistics: a few steps barely move BN's running statistics."""
        model = copy.deepcopy(model).float().train()
        with torch.no_grad():
            return sum(float(model.loss(b, model(b["img"]))[0].sum()) for b in batches)

    batches = [{**b, "img": b["img"].float() / 255} for b in calibration_batches(shapes_data, IMGSZ, 8, 32)]
    torch.manual_seed(0)
    model = build_anchor_model("yolov7-tiny.yaml", nc=NC, verbose=False)
    before = fixed_loss(model)
    result = train(model, shapes_data, epochs=1, imgsz=IMGSZ, batch=4, nbs=4, warmup_epochs=0, optimizer="AdamW",
                   lr0=0.002, workers=0, plots=False, val=True, project=tmp_path, name="v7")
    trained = checkpoint_module(read_checkpoint(result.last))
    assert type(trained).__name__ == "YOLOv7DetectionModel" and type(trained.init_criterion()).__name__ == "OTALoss"
    assert fixed_loss(trained) < before
    assert all(math.isfinite(result.metrics[k]) for k in ("metrics/mAP50(B)", "metrics/mAP50-95(B)"))


@pytest.mark.slow
def test_distill_a_pruned_student_from_its_unpruned_teacher(tiny_pt: Path, pruned: Callable, shapes_data: str,
                                                            tmp_path: Path) -> None:
    student = save_model_checkpoint(pruned("lamp").model, tmp_path / "student.pt")
    row = distill_one_epoch(str(student), str(tiny_pt), shapes_data, tmp_path, IMGSZ)
    for column in ("train/box_loss", "train/obj_loss", "train/logit_l2", "train/feat_cwd"):
        assert float(row[column]) > 0, column
    result = checkpoint_module(read_checkpoint(tmp_path / "kd" / "weights" / "best.pt"))
    assert count_params(result) == count_params(pruned("lamp").model)
