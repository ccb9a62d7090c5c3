"""Pruning to a latency target: the layer model, the table cache, and the planner on a runtime whose timings
are a known function of the widths (no real timing, so these tests are deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from yoloslim.latency import runtimes
from yoloslim.latency.cost import LatencyTarget, prefer_faster_widths
from yoloslim.latency.runtimes import LayerSpec, OnnxRuntimeCPU, conv_layer_onnx
from yoloslim.latency.table import Curve, build_table, sample_widths, timed_layers
from yoloslim.prune.api import prune_model

CONSTANT_MS = 0.5


class WidthRuntime:
    """Latency proportional to a conv's MACs, plus a fixed constant for the rest of the model."""

    name = "fake-widths"

    def __init__(self, threads: int = 1):
        self.layer_calls = 0

    def key(self) -> dict:
        return {"runtime": self.name, "version": "1", "threads": 1}

    @staticmethod
    def ms(spec: LayerSpec) -> float:
        per_group = spec.in_channels // spec.groups
        return 1e-6 * spec.kernel[0] * spec.kernel[1] * spec.height * spec.width * per_group * spec.out_channels

    def time_layer(self, spec: LayerSpec, runs: int) -> float:
        self.layer_calls += 1
        return self.ms(spec)

    def model_ms(self, model: nn.Module, imgsz: int, batch: int) -> float:
        return CONSTANT_MS + sum(self.ms(s) for s in timed_layers(model, imgsz, batch).values())

    def compare(self, base, pruned, imgsz, batch, runs):
        return self.model_ms(base, imgsz, batch), self.model_ms(pruned, imgsz, batch)


@pytest.fixture
def width_runtime(monkeypatch) -> WidthRuntime:
    runtime = WidthRuntime()
    monkeypatch.setitem(runtimes.RUNTIMES, runtime.name, lambda threads: runtime)
    return runtime


def _model(cfg: str = "yolov8n.yaml") -> nn.Module:
    from ultralytics import YOLO

    return YOLO(cfg).model


@pytest.mark.parametrize("rank", ["importance", "per-ms"])
def test_planner_lands_on_the_widths_the_table_predicts(width_runtime, tmp_path, rank):
    target = 1.8
    result = prune_model(_model(), speed_up=target, imgsz=64,
                         latency=LatencyTarget(runtime=width_runtime.name, cache=tmp_path, rank=rank))
    latency = result.details["latency"]
    assert result.reached and result.steps == 1
    assert target <= latency["measured_speed_up"] <= target * 1.05
    assert latency["predicted_ms"] == pytest.approx(latency["ms"], rel=1e-6)
    assert width_runtime.model_ms(result.model, 64, 1) == pytest.approx(latency["ms"], rel=1e-9)


def test_table_is_reused_and_rebuilt_when_the_model_or_size_changes(width_runtime, tmp_path):
    model = _model()
    first = build_table(model, width_runtime, 64, cache=tmp_path, progress=False, log=lambda m: None)
    calls = width_runtime.layer_calls
    assert calls > 0 and not first.reused
    again = build_table(model, width_runtime, 64, cache=tmp_path, progress=False, log=lambda m: None)
    assert again.reused and width_runtime.layer_calls == calls
    assert again.layers_ms({}) == pytest.approx(first.layers_ms({}))
    build_table(model, width_runtime, 96, cache=tmp_path, progress=False, log=lambda m: None)
    assert width_runtime.layer_calls > calls
    calls = width_runtime.layer_calls
    build_table(_model("yolov8s.yaml"), width_runtime, 64, cache=tmp_path, progress=False, log=lambda m: None)
    assert width_runtime.layer_calls > calls
    assert len(list(tmp_path.glob("latency-table-*.json"))) == 3


def test_table_reproduces_a_separable_layer_cost(width_runtime):
    table = build_table(_model(), width_runtime, 64, cache=None, progress=False, log=lambda m: None)
    for name, layer in table.layers.items():
        spec = layer.spec
        for cin, cout in ((spec.in_channels, spec.out_channels), (max(1, spec.in_channels // 2), spec.out_channels),
                          (spec.in_channels, max(8, spec.out_channels - 8))):
            assert layer(cin, cout) == pytest.approx(width_runtime.ms(spec.with_widths(cin, cout)), rel=1e-9), name
    assert table.constant_ms == pytest.approx(CONSTANT_MS)


class ScaledRuntime(WidthRuntime):
    """Layers run faster inside the model than alone: the whole model takes 2 ms + 0.8 × its layers' sum."""

    def model_ms(self, model: nn.Module, imgsz: int, batch: int) -> float:
        return 2.0 + 0.8 * sum(self.ms(s) for s in timed_layers(model, imgsz, batch).values())


def test_calibration_fits_how_the_layers_add_up_inside_the_model():
    from yoloslim.latency.table import current_widths, evenly_narrowed
    from yoloslim.prune.graph import prepare_for_pruning

    runtime, model = ScaledRuntime(), prepare_for_pruning(_model(), imgsz=64).model
    table = build_table(model, runtime, 64, cache=None, progress=False, log=lambda m: None,
                        calibration=lambda: evenly_narrowed(model, 64))
    assert table.scale == pytest.approx(0.8) and table.offset == pytest.approx(2.0)
    narrowed = evenly_narrowed(model, 64, (0.45,))[0]
    assert table.model_estimate(current_widths(narrowed, table)) == pytest.approx(runtime.model_ms(narrowed, 64, 1))
    uncalibrated = build_table(model, runtime, 64, cache=None, progress=False, log=lambda m: None)
    assert uncalibrated.model_estimate(current_widths(narrowed, table)) < 0.95 * runtime.model_ms(narrowed, 64, 1)


def test_a_wider_layer_that_is_no_slower_is_preferred():
    """Widths 8 below a multiple of 16 cost as much as that multiple: the planner keeps those channels."""
    from yoloslim.prune.planner import GroupPlan

    def ms(width: int) -> float:
        return float(-(-width // 16) * 16)

    plan = GroupPlan(nn.Identity(), None, list(range(56)), torch.arange(56.0), 64, 1, 8, [("a", "out", 1.0)])

    def predict(counts):
        return ms(64 - counts[0])

    assert prefer_faster_widths([plan], [24], predict, round_to=8) == [16]  # 40 kept -> 48, no slower
    assert prefer_faster_widths([plan], [32], predict, round_to=8) == [32]  # 32 is already aligned


def test_slack_under_the_goal_goes_back_to_the_most_important_channels():
    from yoloslim.latency.cost import give_back
    from yoloslim.prune.planner import GroupPlan

    weak = GroupPlan(nn.Identity(), None, list(range(48)), torch.arange(48.0) / 100, 64, 1, 16, [])
    strong = GroupPlan(nn.Identity(), None, list(range(48)), 1 + torch.arange(48.0), 64, 1, 16, [])

    def predict(counts):
        return float((64 - counts[0]) + (64 - counts[1]))

    assert give_back([weak, strong], [16, 16], predict, goal=104.0, round_to=8) == [16, 8]
    assert give_back([weak, strong], [16, 16], predict, goal=120.0, round_to=8) == [8, 0]
    assert give_back([weak, strong], [16, 16], predict, goal=99.0, round_to=8) == [16, 16]


def test_curve_interpolates_and_scales_below_its_samples():
    curve = Curve([8, 16, 24], [1.0, 3.0, 4.0])
    assert curve(16) == 3.0 and curve(20) == pytest.approx(3.5) and curve(4) == pytest.approx(0.5)
    assert sample_widths(64, 8, 0.8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert len(sample_widths(1024, 8, 0.8)) <= 33


def test_onnx_layer_computes_the_torch_layer():
    """The timed layer is the deployed conv: same arithmetic as the torch conv and activation."""
    import onnxruntime as ort

    spec = LayerSpec(8, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1, 12, 10, 2, "silu")
    session = ort.InferenceSession(conv_layer_onnx(spec), providers=["CPUExecutionProvider"])
    from onnx import load_from_string, numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in load_from_string(conv_layer_onnx(spec)).graph.initializer}
    conv = nn.Conv2d(8, 16, 3, 2, 1)
    conv.weight.data, conv.bias.data = torch.tensor(weights["w"]), torch.tensor(weights["b"])
    x = np.random.default_rng(1).random((2, 8, 12, 10), dtype=np.float32)
    expected = nn.SiLU()(conv(torch.from_numpy(x))).detach().numpy()
    assert np.abs(session.run(None, {"x": x})[0] - expected).max() < 1e-4
    assert OnnxRuntimeCPU(1).time_layer(spec, runs=2) > 0


def test_latency_target_conflicts_are_one_line(capsys):
    from yoloslim.cli import main

    for extra in (["--speed-up", "2"], ["--prune-ratio", "0.3"], ["--stages", "2"]):
        code = main(["prune", "--weights", "yolov8n.yaml", "--latency-speed-up", "2", "--no-latency", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "--latency-speed-up" in err, err
    code = main(["prune", "--weights", "yolov8n.yaml", "--latency-speed-up", "2", "--runtime", "nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "onnxruntime-cpu" in err, err
