"""A per-layer latency table of one architecture on one runtime, and the latency of any pruning read from it.

Every conv the planner can narrow is timed alone, deployed (BatchNorm folded, activation fused), at the
input size it sees at ``imgsz``: once across its output widths with all inputs, once across its input widths
with all outputs, at every width the planner can produce (multiples of ``round_to`` down to what
``max_layer_ratio`` allows), and at a few points with both reduced. A layer at (in, out) then costs what
:class:`LayerLatency` derives from the two curves and those points, each curve interpolated between its
samples, so a width the runtime handles badly (an unaligned one) shows up as the bump it is. How the layers'
sum maps to the whole model (concats, upsampling, pooling and the decode are not timed; a conv runs faster
inside the model than alone) is fitted on whole-model timings: see :class:`LatencyTable`.

The table is cached as JSON per (architecture, imgsz, batch, runtime, threads, machine, sampling) and reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from yoloslim.latency.runtimes import LayerSpec, Runtime, machine_key

MAX_SAMPLES = 32  # per axis: beyond this the sampled widths thin out evenly
DIAGONAL_SHARES = (0.25, 0.5, 0.75)  # both widths at these shares fit the cross term
LAYER_RUNS = 10
TABLE_FORMAT = 3  # joins the cache key: a table written by another layer model is rebuilt
CALIBRATION_RATIOS = (0.3, 0.6)  # evenly narrowed copies whose whole-model latency fits scale and offset


def current_widths(model: nn.Module, table: LatencyTable) -> dict[str, tuple[int, int]]:
    """(in, out) channels of each timed layer of ``model`` as it is now."""
    modules = dict(model.named_modules())
    return {name: (modules[name].in_channels, modules[name].out_channels) for name in table.layers if name in modules}


def _activation_name(act: nn.Module | None) -> str:
    if isinstance(act, nn.SiLU):
        return "silu"
    if isinstance(act, nn.LeakyReLU):
        return f"leaky:{act.negative_slope:g}"
    if isinstance(act, (nn.ReLU, nn.ReLU6)):
        return "relu"
    if isinstance(act, nn.Hardswish):
        return "hardswish"
    if isinstance(act, nn.Sigmoid):
        return "sigmoid"
    return "none"


def timed_layers(model: nn.Module, imgsz: int, batch: int) -> dict[str, LayerSpec]:
    """Each plain or depthwise 2-D conv of ``model`` as deployed at ``imgsz``, by module name.

    Grouped (non-depthwise) convs, linear layers and transposed convs are left to the constant.
    """
    activations = {id(m.conv): getattr(m, "act", None) for m in model.modules()
                   if isinstance(getattr(m, "conv", None), nn.Conv2d)}
    names = {id(m): n for n, m in model.named_modules()}
    specs: dict[str, LayerSpec] = {}

    def record(module: nn.Conv2d, inputs, output) -> None:
        x = inputs[0]
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not isinstance(module.padding, tuple):
            return
        spec = LayerSpec(module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                         tuple(module.padding), tuple(module.dilation), module.groups, x.shape[-2], x.shape[-1],
                         batch, _activation_name(activations.get(id(module))))
        if spec.groups == 1 or spec.depthwise:
            specs[names[id(module)]] = spec

    hooks = [m.register_forward_hook(record) for m in model.modules() if type(m) is nn.Conv2d]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for hook in hooks:
            hook.remove()
    return specs


def diagonal_widths(spec: LayerSpec, step: int | None) -> list[tuple[int, int]]:
    """A few (in, out) pairs with both widths reduced, to fit a layer's ``cross`` term."""
    pairs = []
    for share in DIAGONAL_SHARES:
        cin, cout = (max(step or 1, round(full * share / (step or 1)) * (step or 1))
                     for full in (spec.in_channels, spec.out_channels))
        if cin < spec.in_channels and cout < spec.out_channels:
            pairs.append((cin, cout))
    return sorted(set(pairs))


def sample_widths(full: int, step: int | None, max_layer_ratio: float) -> list[int]:
    """The widths the planner can leave a layer of ``full`` channels with, thinned to at most MAX_SAMPLES."""
    step = step or max(1, full // 16)
    lowest = max(step, math.floor(full * (1.0 - max_layer_ratio) / step) * step)
    widths = list(range(lowest, full, step))
    if len(widths) >= MAX_SAMPLES:
        stride = math.ceil(len(widths) / (MAX_SAMPLES - 1))
        widths = widths[::-1][::stride][::-1]
    return [*widths, full]


@dataclass
class Curve:
    """Milliseconds of a layer against one of its widths, linear between samples and proportional below them."""

    widths: list[int]
    ms: list[float]

    def __call__(self, width: float) -> float:
        if width <= 0:
            return 0.0
        if width <= self.widths[0]:
            return self.ms[0] * width / self.widths[0]
        i = bisect_left(self.widths, width)
        if i >= len(self.widths):
            return self.ms[-1] * width / self.widths[-1]
        if self.widths[i] == width:
            return self.ms[i]
        w0, w1, m0, m1 = self.widths[i - 1], self.widths[i], self.ms[i - 1], self.ms[i]
        return m0 + (m1 - m0) * (width - w0) / (w1 - w0)


@dataclass
class LayerLatency:
    """ms(in, out) = by_in(in) + by_out(out) − full + cross · (in − IN)(out − OUT): exact for any cost of the form
    a + b·in + c·out + d·in·out (fixed overhead, input and output traffic, MACs) and for the steps each curve
    has; ``cross`` is fitted to a few samples with both widths reduced."""

    spec: LayerSpec
    by_in: Curve
    by_out: Curve
    cross: float = 0.0

    @property
    def full_ms(self) -> float:
        return self.by_out.ms[-1]

    def __call__(self, in_channels: float, out_channels: float) -> float:
        if self.spec.depthwise:
            return self.by_out(min(in_channels, out_channels))
        spec = self.spec
        ms = (self.by_in(in_channels) + self.by_out(out_channels) - self.full_ms
              + self.cross * (in_channels - spec.in_channels) * (out_channels - spec.out_channels))
        return max(ms, 0.0)

    def fit_cross(self, samples: list[tuple[int, int, float]]) -> None:
        """Least-squares ``cross`` from (in, out, ms) samples off both curves."""
        spec, top, bottom = self.spec, 0.0, 0.0
        for cin, cout, ms in samples:
            lever = (cin - spec.in_channels) * (cout - spec.out_channels)
            top += lever * (ms - self.by_in(cin) - self.by_out(cout) + self.full_ms)
            bottom += lever * lever
        self.cross = top / bottom if bottom else 0.0


@dataclass
class LatencyTable:
    """The timed layers, and how their sum maps to the whole model: ``model ≈ offset + scale × sum``.

    A conv timed alone is not the same conv inside the model (the runtime's layout conversions and caches
    differ), so the sum of the layers alone overstates what pruning saves. Whole-model measurements of a few
    evenly narrowed copies fit ``scale`` and ``offset`` (least squares with the unpruned model); without
    them the table assumes scale 1."""

    layers: dict[str, LayerLatency]
    model_ms: float  # the whole unpruned model, measured
    key: dict[str, Any]
    seconds: float = 0.0  # time it took to build
    path: Path | None = None
    reused: bool = False
    samples: int = field(default=0)
    scale: float = 1.0
    offset: float | None = None  # None: model_ms minus the unpruned layers' sum
    calibration: list[tuple[float, float]] = field(default_factory=list)  # (layers' sum, measured ms) per model

    @property
    def full_widths(self) -> dict[str, tuple[int, int]]:
        return {n: (l.spec.in_channels, l.spec.out_channels) for n, l in self.layers.items()}

    @property
    def constant_ms(self) -> float:
        """What the timed layers do not account for in the unpruned model."""
        return self.model_ms - self.layers_ms(self.full_widths)

    def layers_ms(self, widths: dict[str, tuple[float, float]]) -> float:
        """Sum of the timed layers at (in, out) widths by name (a layer not given is at its full widths)."""
        return sum(layer(*widths.get(name, (layer.spec.in_channels, layer.spec.out_channels)))
                   for name, layer in self.layers.items())

    def model_estimate(self, widths: dict[str, tuple[float, float]]) -> float:
        """The whole model's milliseconds at these layer widths."""
        offset = self.constant_ms if self.offset is None else self.offset
        return offset + self.scale * self.layers_ms(widths)

    def calibrate(self, points: list[tuple[float, float]]) -> None:
        """Fit ``scale`` and ``offset`` to (layers' sum, measured ms) points, the unpruned model included."""
        points = [(self.layers_ms(self.full_widths), self.model_ms), *points]
        self.calibration = points
        if len(points) < 2:
            return
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        if spread <= 0:
            return
        self.scale = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
        self.offset = mean_y - self.scale * mean_x

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "model_ms": self.model_ms, "seconds": self.seconds, "samples": self.samples,
                "scale": self.scale, "offset": self.offset, "calibration": self.calibration,
                "layers": {n: {"spec": l.spec.as_dict(), "in": [l.by_in.widths, l.by_in.ms],
                               "out": [l.by_out.widths, l.by_out.ms], "cross": l.cross}
                           for n, l in self.layers.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> LatencyTable:
        layers = {}
        for name, entry in data["layers"].items():
            spec = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["spec"].items()}
            layers[name] = LayerLatency(LayerSpec(**spec), Curve(*entry["in"]), Curve(*entry["out"]), entry["cross"])
        return cls(layers, data["model_ms"], data["key"], data["seconds"], path, True, data["samples"], data["scale"],
                   data["offset"], [tuple(p) for p in data["calibration"]])


def table_key(specs: dict[str, LayerSpec], runtime: Runtime, imgsz: int, batch: int, round_to: int | None,
              max_layer_ratio: float) -> dict[str, Any]:
    architecture = hashlib.sha256(json.dumps({n: s.as_dict() for n, s in specs.items()},
                                             sort_keys=True).encode()).hexdigest()[:16]
    return {"architecture": architecture, "imgsz": imgsz, "batch": batch, **runtime.key(), **machine_key(),
            "round_to": round_to, "max_layer_ratio": max_layer_ratio, "format": TABLE_FORMAT}


def cache_path(folder: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"latency-table-{key['architecture'][:8]}-{key['imgsz']}px-{digest}.json"


def evenly_narrowed(model: nn.Module, imgsz: int, ratios: tuple[float, ...] = CALIBRATION_RATIOS) -> list[nn.Module]:
    """Copies of ``model`` with every prunable layer narrowed by each ratio (L1, per layer): calibration points."""
    from yoloslim.prune.api import prune_model

    return [prune_model(model, method="l1", prune_ratio=ratio, global_pruning=False, imgsz=imgsz,
                        log=lambda message: None).model for ratio in ratios]


def build_table(model: nn.Module, runtime: Runtime, imgsz: int, batch: int = 1, round_to: int | None = 8,
                max_layer_ratio: float = 0.8, cache: Path | None = None, runs: int = 20,
                progress: bool = True, log: Callable[[str], None] = print,
                calibration: Callable[[], list[nn.Module]] | None = None) -> LatencyTable:
    """The latency table of ``model`` (unpruned) on ``runtime``, read from ``cache`` when it was built before.

    ``calibration`` returns narrowed copies of ``model`` (same layer names) whose measured latency fits the
    table's scale and offset; :func:`evenly_narrowed` is the usual choice."""
    from tqdm import tqdm

    from yoloslim.engine.checkpoint import atomic_write_bytes

    specs = timed_layers(model, imgsz, batch)
    key = table_key(specs, runtime, imgsz, batch, round_to, max_layer_ratio)
    path = cache_path(cache, key) if cache is not None else None
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                log(f"latency table reused from {path}")
                return LatencyTable.from_json(data, path)
        except (ValueError, KeyError, TypeError) as e:
            log(f"latency table {path} is unreadable ({type(e).__name__}); building it again")
    started = time.perf_counter()
    axes = {name: (sample_widths(s.in_channels, round_to, max_layer_ratio),
                   sample_widths(s.out_channels, round_to, max_layer_ratio)) for name, s in specs.items()}
    wanted: dict[LayerSpec, float] = {}
    for name, spec in specs.items():
        ins, outs = axes[name]
        if spec.depthwise:
            wanted.update({spec.with_widths(w, w): 0.0 for w in outs})
        else:
            wanted.update({spec.with_widths(w, spec.out_channels): 0.0 for w in ins})
            wanted.update({spec.with_widths(spec.in_channels, w): 0.0 for w in outs})
            wanted.update({spec.with_widths(cin, cout): 0.0 for cin, cout in diagonal_widths(spec, round_to)})
    for spec in tqdm(list(wanted), desc=f"latency table ({runtime.key()['runtime']})", unit="layer",
                     disable=not progress):
        wanted[spec] = runtime.time_layer(spec, LAYER_RUNS)
    layers = {}
    for name, spec in specs.items():
        ins, outs = axes[name]
        if spec.depthwise:
            curve = Curve(outs, [wanted[spec.with_widths(w, w)] for w in outs])
            layers[name] = LayerLatency(spec, curve, curve)
        else:
            layers[name] = LayerLatency(spec, Curve(ins, [wanted[spec.with_widths(w, spec.out_channels)] for w in ins]),
                                        Curve(outs, [wanted[spec.with_widths(spec.in_channels, w)] for w in outs]))
            layers[name].fit_cross([(cin, cout, wanted[spec.with_widths(cin, cout)])
                                    for cin, cout in diagonal_widths(spec, round_to)])
    model_ms, _ = runtime.compare(model, model, imgsz, batch, runs)
    table = LatencyTable(layers, model_ms, key, 0.0, path, False, len(wanted))
    points = []
    for narrowed in calibration() if calibration else []:
        base_ms, narrowed_ms = runtime.compare(model, narrowed, imgsz, batch, runs)
        points.append((table.layers_ms(current_widths(narrowed, table)), narrowed_ms * model_ms / base_ms))
    table.calibrate(points)
    table.seconds = time.perf_counter() - started
    log(f"latency table: {len(wanted)} layer samples over {len(layers)} layers and {len(points)} calibration "
        f"model(s) in {table.seconds:.1f} s; model {model_ms:.2f} ms ≈ {table.model_estimate(table.full_widths):.2f} "
        f"= {table.offset if table.offset is not None else table.constant_ms:.2f} + {table.scale:.3f} × layers")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(table.to_json()).encode())
    return table
