"""The safe ratio, measured: the largest classic-slimming cut whose detection loss stays near the uncut model's.

A short sparse run does not reliably open the clean gap in |γ| that network slimming expects (docs/BENCHMARKS.md:
with one lr for every weight the widest gaps were 1.16-1.18x; with γ at 6 x that lr 3.7-3.9x on digits but 2.0x on
shapes), yet a cut far past half the channels can cost nothing. So the cost of a cut is measured, the way PAGCP
measures a layer's (:mod:`yoloslim.prune.task_losses`): each task part of the detection loss (box/cls/dfl, or
box/obj/cls) on a few training batches, eval mode, no gradients. A cut (with ``--round-up ROUND_UP``) is safe while
every part stays within (1 + ``LOSS_BOUND``) × the uncut model's. Every ratio of a ``COARSE_STEP`` grid is
measured, because the cost is not monotone in the ratio (rounding up to multiples of 8 keeps different channels at
different ratios: on a 20-epoch sparse yolov8n the cut at 0.2 raised a task loss by 8.1%, the cuts at 0.3-0.8 by
2.1-4.6%); the largest safe one is then refined to hundredths by bisection towards the next grid point.

``LOSS_BOUND`` 0.05 was set on the digits benchmark's sparse yolov8n (AdamW lr 0.002, sr 1e-2, 8 epochs;
``benchmarks/sparse_defaults.py``): every cut up to 0.82 raised no part by more than 3% and slimming at 0.82
cost 0.006 mAP50-95 against the sparse model; the cut at 0.83 raised the box loss by 117%. Cells whose cut at
0.5 lost 0.14-0.52 mAP50-95 broke the bound at the first grid ratio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.task_losses import TaskLosses

LOSS_BOUND = 0.05
ROUND_UP = 8  # the cut keeps channels in multiples of 8, as deployment wants (and the cut costs less with it)
COARSE_STEP = 0.1
CALIB_BATCHES = 4
HUNDREDTHS = 100


@dataclass(frozen=True)
class MeasuredCut:
    ratio: float  # the largest safe ratio found (0.0: even the first step broke the bound)
    bound: float
    layer_keep: float
    round_up: int | None
    increase: float  # the largest relative increase of a task loss at ``ratio``
    breaking_ratio: float | None  # the smallest ratio tried that broke the bound
    breaking_task: str | None
    tried: list[tuple[float, float]]  # (ratio, largest relative increase), in the order tried

    def as_record(self) -> dict:
        return asdict(self)


def measure_safe_ratio(model: nn.Module, losses: TaskLosses, shortcut: str, layer_keep: float, imgsz: int,
                       bound: float = LOSS_BOUND, round_up: int | None = ROUND_UP) -> MeasuredCut:
    """The largest classic-slimming ratio (hundredths) whose cut keeps every task loss within (1 + ``bound``) ×."""
    from yoloslim.prune.classic import slim_prune_model

    base = losses(model)
    results: dict[int, tuple[float, str]] = {}

    def worst(hundredths: int) -> tuple[float, str]:
        if hundredths not in results:
            try:
                cut = slim_prune_model(model, hundredths / HUNDREDTHS, shortcut=shortcut, layer_keep=layer_keep,
                                       round_up=round_up, imgsz=imgsz).model
            except UserError as e:
                results[hundredths] = (math.inf, str(e))
            else:
                now = losses(cut)
                rise = {task: now[task] / base[task] - 1.0 for task in base if base[task] > 0}
                task = max(rise, key=rise.get)
                results[hundredths] = (rise[task], task)
        return results[hundredths]

    step = round(COARSE_STEP * HUNDREDTHS)
    grid = range(step, HUNDREDTHS, step)
    safe = max((hundredths for hundredths in grid if worst(hundredths)[0] <= bound), default=0)
    broken = min(safe + step, HUNDREDTHS)
    while broken - safe > 1:
        middle = (safe + broken) // 2
        safe, broken = (middle, broken) if worst(middle)[0] <= bound else (safe, middle)
    breaking = results.get(broken)
    return MeasuredCut(safe / HUNDREDTHS, bound, layer_keep, round_up, results[safe][0] if safe else 0.0,
                       broken / HUNDREDTHS if breaking else None, breaking[1] if breaking else None,
                       [(h / HUNDREDTHS, rise) for h, (rise, _) in results.items()])


def measure_model(model: nn.Module, data, imgsz: int, batch: int, shortcut: str) -> MeasuredCut:
    """:func:`measure_safe_ratio` on ``CALIB_BATCHES`` training batches of ``data``, with the verdict's
    --layer-keep."""
    from yoloslim.engine.tasks import task_of
    from yoloslim.prune.calibration import loader_stride
    from yoloslim.sparsity.verdict import LAYER_KEEP

    losses = TaskLosses.load(data, CALIB_BATCHES, imgsz, batch, loader_stride(model), task_of(model), min_parts=1)
    return measure_safe_ratio(model, losses, shortcut, LAYER_KEEP, imgsz)


def measure_checkpoint(path, data, log: Callable[[str], None] = print) -> MeasuredCut | None:
    """Measure a sparse run's checkpoint and record the verdict with the measured safe ratio in it (in place,
    atomically). None, with a log line, when the model's loss has no task parts to measure."""
    from yoloslim.engine.checkpoint import atomic_torch_save, checkpoint_module, model_meta, read_checkpoint, \
        record_meta
    from yoloslim.sparsity.compare import judged_gammas
    from yoloslim.sparsity.verdict import with_measured_cut

    ckpt = read_checkpoint(path)
    module = checkpoint_module(ckpt).float().eval()
    args = ckpt.get("train_args") or {}
    imgsz, batch = int(args.get("imgsz") or 640), int(args.get("batch") or 8)
    batch = batch if batch > 0 else 8
    values, verdict = judged_gammas(module)
    try:
        cut = measure_model(module, data, imgsz, batch, verdict.shortcut)
    except UserError as e:
        log(f"{path}: safe ratio not measured ({e}); the verdict stays the |γ| gap's")
        return None
    verdict = with_measured_cut(verdict, cut, values)
    for key in ("model", "ema"):
        if isinstance(ckpt.get(key), nn.Module):
            sparse = model_meta(ckpt[key]).get("sparse", {})
            record_meta(ckpt[key], sparse={**sparse, "verdict": verdict.as_record(), "measured_cut": cut.as_record()})
    atomic_torch_save(ckpt, path)
    return cut
