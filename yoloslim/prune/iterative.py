"""Reach a speed-up in several smaller prunes with finetuning in between.

One large cut removes channels whose loss the remaining ones have not yet learned to cover; cutting
in ``stages`` steps, each followed by a short finetune, lets the network adapt before the next cut
is chosen (the importances are recomputed on the adapted weights). Stage ``k`` of ``K`` aims at
``speed_up ** (k / K)`` of the *original* GFLOPs, so every stage removes the same share of what is
left, and the last one lands in the usual window [speed_up, 1.05 × speed_up]. The per-layer limit
stays relative to the original widths across stages.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.api import PruneResult, _log, conv_channels, prune_model
from yoloslim.prune.planner import WINDOW


@dataclass
class StageRecord:
    stage: int
    target: float  # speed-up over the original model this stage aims at
    speed_up: float  # speed-up over the original model reached
    params: int
    map50_95_pruned: float  # the task's accuracy (mAP50-95 for detection) right after this stage's prune
    map50_95_finetuned: float | None  # after this stage's finetune; None for the last stage
    weights: str  # this stage's pruned checkpoint


def stage_targets(speed_up: float, stages: int) -> list[float]:
    return [speed_up ** (k / stages) for k in range(1, stages + 1)]


def check_iterative_settings(stages: int, stage_epochs: int, speed_up: float | None, prune_ratio: float | None,
                             data) -> None:
    """Every bad combination of the stage settings as one line, before any work."""
    if stages < 1:
        raise UserError(f"--stages must be at least 1, got {stages}")
    if stages == 1:
        return
    if prune_ratio is not None or speed_up is None:
        raise UserError("--stages works with --speed-up, not --prune-ratio — drop one of them")
    if data is None:
        raise UserError("--stages finetunes between stages — pass --data DATA_YAML")
    if stage_epochs < 1:
        raise UserError(f"--stage-epochs must be at least 1 with --stages {stages}, got {stage_epochs}")
    if speed_up ** (1 / stages) <= WINDOW:
        most = max(1, math.ceil(math.log(speed_up) / math.log(WINDOW)) - 1)
        raise UserError(f"--stages {stages} is too many for --speed-up {speed_up:g}: each stage would fall inside "
                        f"the {WINDOW:g}x target window — use at most {most} stages")


def iterative_prune(
    model: str | Path | nn.Module,
    data: str | Path,
    speed_up: float,
    stages: int,
    stage_epochs: int,
    out: str | Path,
    prune_options: dict[str, Any],
    finetune_options: dict[str, Any],
    recalib: int = 0,
    log: Callable[[str], None] = _log,
) -> tuple[PruneResult, list[StageRecord]]:
    """Prune ``model`` to ``speed_up`` in ``stages`` cuts with ``stage_epochs`` of finetuning between them.

    ``prune_options`` go to :func:`prune_model` (method, imgsz, round_to, ...; not data or speed_up),
    ``finetune_options`` to :func:`finetune` (imgsz, batch, device, ...). Each stage writes
    ``out/stage-K/pruned.pt`` and its finetune run. Returns the last stage's result, re-based on the
    original model (speed-up, parameters, channel widths), and one record per stage. The caller
    finetunes the result further if it wants.
    """
    from yoloslim.engine.checkpoint import save_model_checkpoint
    from yoloslim.engine.validate import validate
    from yoloslim.engine.tasks import task_spec
    from yoloslim.prune.api import finetune
    from yoloslim.prune.recalibrate import recalibrate_bn

    check_iterative_settings(stages, stage_epochs, speed_up, None, data)
    imgsz = prune_options.get("imgsz", 640)
    measured = {"imgsz": imgsz, "batch": finetune_options.get("batch", 16),
                "device": finetune_options.get("device", "cpu")}
    current: str | Path | nn.Module = model
    records: list[StageRecord] = []
    first: PruneResult | None = None
    result: PruneResult | None = None
    seconds, steps = 0.0, 0
    for stage, target in enumerate(stage_targets(speed_up, stages), start=1):
        log(f"stage {stage}/{stages}: pruning to {target:.3f}x fewer GFLOPs than the original")
        relative = target if first is None else target * result.gflops / first.base_gflops
        started = time.perf_counter()
        result = prune_model(current, speed_up=relative, data=data, log=log,
                             initial_widths=first.initial_widths if first else None, **prune_options)
        seconds, steps = seconds + time.perf_counter() - started, steps + result.steps
        first = first or result
        if recalib:
            recalibrate_bn(result.model, data, recalib, **measured)
        folder = Path(out) / f"stage-{stage}"
        pruned_pt = save_model_checkpoint(result.model, folder / "pruned.pt", meta={"pruned": result.summary()})
        reached = first.base_gflops / result.gflops
        accuracy = task_spec(result.model)
        pruned_map = validate(result.model, data, **measured)[accuracy.primary]
        tuned_map = None
        if stage < stages:
            current = finetune(pruned_pt, data, epochs=stage_epochs, project=folder, name="finetune",
                               **finetune_options).last
            tuned_map = validate(current, data, **measured)[accuracy.primary]
        records.append(StageRecord(stage, round(target, 4), round(reached, 4), result.params, pruned_map,
                                   tuned_map, str(pruned_pt)))
        log(f"stage {stage}/{stages}: {reached:.3f}x, {result.params:,} params, {accuracy.primary_label} "
            f"{pruned_map:.3f} after "
            f"pruning" + (f", {tuned_map:.3f} after {stage_epochs} finetune epochs" if tuned_map is not None else ""))
    after = conv_channels(result.model)
    reached = first.base_gflops / result.gflops
    final = replace(
        result, target=speed_up, speed_up=reached, reached=speed_up <= reached <= speed_up * WINDOW,
        base_gflops=first.base_gflops, base_params=first.base_params, seconds=seconds, steps=steps,
        note="; ".join(filter(None, [f"{stages} stages, {stage_epochs} finetune epochs between them", result.note])),
        channels=[{**c, "after": after.get(c["layer"], c["after"])} for c in first.channels],
    )
    return final, records


def stages_summary(records: list[StageRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
