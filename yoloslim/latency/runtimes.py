"""The deployment runtimes latency is measured on, behind one small interface.

A runtime does two things: time one conv layer described by a :class:`LayerSpec` (built directly in the
runtime's own format, so that thousands of samples cost seconds, not an exporter run each), and time a
whole model against its unpruned base, alternating the two in one process so that load on the machine
hits both alike. ONNX Runtime on the CPU is the one that ships; TensorRT or OpenVINO are one class each.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from torch import nn

from yoloslim.errors import UserError


@dataclass(frozen=True)
class LayerSpec:
    """One deployed conv: BatchNorm folded into its bias, followed by its activation."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    height: int
    width: int
    batch: int
    activation: str  # "none", "relu", "silu", "hardswish", "sigmoid" or "leaky:<slope>"

    def with_widths(self, in_channels: int, out_channels: int) -> LayerSpec:
        """The same layer with other widths (a depthwise layer keeps one group per channel)."""
        groups = out_channels if self.depthwise else self.groups
        return LayerSpec(in_channels, out_channels, self.kernel, self.stride, self.padding, self.dilation, groups,
                         self.height, self.width, self.batch, self.activation)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runtime(Protocol):
    name: str

    def key(self) -> dict[str, Any]:
        """What the timings depend on besides the layer: runtime, version, threads (joins the table's cache key)."""

    def time_layer(self, spec: LayerSpec, runs: int) -> float:
        """Median milliseconds of one run of the layer."""

    def compare(self, base: nn.Module, pruned: nn.Module, imgsz: int, batch: int, runs: int) -> tuple[float, float]:
        """Median milliseconds of (base, pruned), deployed, timed alternately in one process."""


def _median_alternating(run_a: Callable[[], Any], run_b: Callable[[], Any], runs: int,
                        warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        run_a()
        run_b()
    times_a, times_b = [], []
    for _ in range(runs):
        for run, times in ((run_a, times_a), (run_b, times_b)):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times_a), statistics.median(times_b)


class OnnxRuntimeCPU:
    """ONNX Runtime's CPU execution provider with ``threads`` intra-op threads and every graph optimisation on,
    as a deployed model runs."""

    name = "onnxruntime-cpu"

    def __init__(self, threads: int = 1):
        import onnxruntime

        self.threads = threads
        self.version = onnxruntime.__version__

    def key(self) -> dict[str, Any]:
        return {"runtime": self.name, "version": self.version, "threads": self.threads}

    def _session(self, model: bytes | str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def time_layer(self, spec: LayerSpec, runs: int) -> float:
        import numpy as np

        from yoloslim.report.metrics import median_ms

        session = self._session(conv_layer_onnx(spec))
        x = np.random.default_rng(0).random((spec.batch, spec.in_channels, spec.height, spec.width), dtype=np.float32)
        return median_ms(lambda: session.run(None, {"x": x}), warmup=2, runs=runs)

    def compare(self, base: nn.Module, pruned: nn.Module, imgsz: int, batch: int, runs: int) -> tuple[float, float]:
        import numpy as np

        from yoloslim.engine.export import export_onnx

        models = (base,) if pruned is base else (base, pruned)  # the unpruned model against itself: one export
        with tempfile.TemporaryDirectory(prefix="yoloslim-latency-") as tmp:
            sessions = [self._session(str(export_onnx(m, imgsz=imgsz, out=Path(tmp) / f"{i}.onnx", check=False,
                                                      batch=batch).path))
                        for i, m in enumerate(models)]
        sessions = [sessions[0], sessions[-1]]
        x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)
        feeds = [{s.get_inputs()[0].name: x} for s in sessions]
        return _median_alternating(lambda: sessions[0].run(None, feeds[0]), lambda: sessions[1].run(None, feeds[1]),
                                   runs)


def conv_layer_onnx(spec: LayerSpec) -> bytes:
    """A one-layer ONNX model: Conv (with bias, as after folding BatchNorm) and the activation."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((spec.out_channels, spec.in_channels // spec.groups, *spec.kernel), dtype=np.float32)
    bias = rng.standard_normal(spec.out_channels, dtype=np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=list(spec.kernel),
                            strides=list(spec.stride), pads=[*spec.padding, *spec.padding],
                            dilations=list(spec.dilation), group=spec.groups)
    nodes = [conv, *_activation_nodes(spec.activation, "conv", "y")]
    graph = helper.make_graph(
        nodes, "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [spec.batch, spec.in_channels, spec.height,
                                                                spec.width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    return model.SerializeToString()


def _activation_nodes(activation: str, source: str, target: str) -> list:
    from onnx import helper

    if activation == "silu":
        return [helper.make_node("Sigmoid", [source], ["gate"]), helper.make_node("Mul", [source, "gate"], [target])]
    if activation.startswith("leaky:"):
        return [helper.make_node("LeakyRelu", [source], [target], alpha=float(activation.split(":", 1)[1]))]
    op = {"relu": "Relu", "hardswish": "HardSwish", "sigmoid": "Sigmoid"}.get(activation)
    return [helper.make_node(op or "Identity", [source], [target])]


RUNTIMES: dict[str, Callable[[int], Runtime]] = {OnnxRuntimeCPU.name: OnnxRuntimeCPU}
DEFAULT_RUNTIME = OnnxRuntimeCPU.name


def get_runtime(name: str, threads: int) -> Runtime:
    if name not in RUNTIMES:
        raise UserError(f"unknown latency runtime {name!r} — choose one of: {', '.join(RUNTIMES)}")
    if threads < 1:
        raise UserError(f"--latency-threads must be at least 1, got {threads}")
    return RUNTIMES[name](threads)


def machine_key() -> dict[str, Any]:
    """The machine part of a latency table's cache key."""
    from yoloslim.report.machine import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count()}
