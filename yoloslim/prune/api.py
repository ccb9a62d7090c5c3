"""``prune_model``: one call from a detector to a smaller detector, and ``finetune`` to recover accuracy."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from torch import nn

from yoloslim.errors import UserError
from yoloslim.latency.cost import RANKINGS, LatencyTarget
from yoloslim.prune.methods import DEFAULT_METHOD, get_method


@dataclass
class PruneResult:
    model: nn.Module
    method: str
    target: float | None  # the requested speed-up (None with a fixed prune ratio)
    prune_ratio: float | None
    speed_up: float
    reached: bool
    note: str
    base_gflops: float
    gflops: float
    base_params: int
    params: int
    seconds: float
    steps: int
    imgsz: int
    protected: list[tuple[str, str]]
    rewritten: list[str]
    channels: list[dict[str, Any]] = field(default_factory=list)  # per conv layer: name, before, after
    initial_widths: dict[str, int] = field(default_factory=dict)  # what --max-layer-ratio is measured against
    details: dict[str, Any] = field(default_factory=dict)  # a method's own planner record (PAGCP: settings, units)

    def summary(self) -> dict[str, Any]:
        """What is recorded in the checkpoint (``model.yoloslim["pruned"]``) and the report."""
        return {
            "method": self.method,
            "target_speed_up": self.target,
            "prune_ratio": self.prune_ratio,
            "speed_up": round(self.speed_up, 4),
            "reached": self.reached,
            "note": self.note,
            "imgsz": self.imgsz,
            "base_gflops": self.base_gflops,
            "gflops": self.gflops,
            "base_params": self.base_params,
            "params": self.params,
            "seconds": round(self.seconds, 2),
            "steps": self.steps,
            "protected": [{"module": n, "reason": r} for n, r in self.protected],
            "rewritten": self.rewritten,
            **self.details,
        }


def _log(message: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(message)


def _warn(message: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.warning(message)


def check_prune_settings(method: str, speed_up: float | None, prune_ratio: float | None, max_steps: int,
                         round_to: int | None, max_layer_ratio: float, calib_batches: int, data,
                         planner_settings: Any = None, latency: LatencyTarget | None = None) -> None:
    """Every foreseeable bad setting as one line, before any work starts."""
    chosen = get_method(method)
    if latency is not None:
        if prune_ratio is not None:
            raise UserError("--latency-speed-up and --prune-ratio both set the target — give one of them")
        if chosen.planner:
            raise UserError(f"method {method!r} plans on GFLOPs with its own planner — use --speed-up with it, or "
                            f"another method with --latency-speed-up")
        if latency.rank not in RANKINGS:
            raise UserError(f"unknown --latency-rank {latency.rank!r} — choose one of: {', '.join(RANKINGS)}")
        if latency.batch < 1 or latency.runs < 1:
            raise UserError(f"--latency-batch and --latency-runs must be at least 1, got {latency.batch} and "
                            f"{latency.runs}")
        from yoloslim.latency.runtimes import get_runtime

        get_runtime(latency.runtime, latency.threads)
    if chosen.planner and prune_ratio is not None:
        raise UserError(f"method {method!r} sets every layer's ratio itself from the measured loss — give "
                        f"--speed-up instead of --prune-ratio")
    if planner_settings is not None and not chosen.planner:
        raise UserError(f"planner settings belong to a method with its own planner (pagcp), not {method!r}")
    if prune_ratio is not None:
        if not 0.0 < prune_ratio < 1.0:
            raise UserError(f"--prune-ratio must be between 0 and 1 (exclusive), got {prune_ratio}")
    elif speed_up is None or not speed_up > 1.0:
        raise UserError(f"--speed-up must be greater than 1.0 (base GFLOPs / pruned GFLOPs), got {speed_up}")
    if max_steps < 1:
        raise UserError(f"--max-steps must be at least 1, got {max_steps}")
    if round_to is not None and round_to < 1:
        raise UserError(f"--round-to must be a positive channel multiple (or 0/None for no rounding), got {round_to}")
    if not 0.0 < max_layer_ratio <= 1.0:
        raise UserError(f"--max-layer-ratio must be in (0, 1], got {max_layer_ratio}")
    if chosen.needs_data:
        if data is None:
            uses = "scores channels with gradients" if chosen.gradients else "measures the detection loss"
            raise UserError(f"method {method!r} {uses} from calibration batches — pass --data DATA_YAML (or "
                            f"choose a method such as {DEFAULT_METHOD})")
        if calib_batches < 1:
            raise UserError(f"--calib-batches must be at least 1, got {calib_batches}")


def latency_cost(planner, latency: LatencyTarget, target: float, log: Callable[[str], None]):
    """The planner's cost model for a latency target: the model's latency table (built or read from the cache)
    on the chosen runtime."""
    from yoloslim.latency.cost import LatencyCost
    from yoloslim.latency.runtimes import get_runtime
    from yoloslim.latency.table import build_table, evenly_narrowed

    runtime = get_runtime(latency.runtime, latency.threads)
    model = planner.prunable.model
    table = build_table(model, runtime, planner.imgsz, latency.batch, planner.round_to, planner.max_layer_ratio,
                        cache=latency.cache, runs=latency.runs, log=log,
                        calibration=lambda: evenly_narrowed(model, planner.imgsz))
    return LatencyCost(planner, table, runtime, latency.batch, latency.runs, target, latency.rank)


def conv_channels(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}


def prune_model(
    model: str | Path | nn.Module,
    method: str = DEFAULT_METHOD,
    speed_up: float | None = 2.0,
    prune_ratio: float | None = None,
    imgsz: int = 640,
    max_steps: int = 10,
    global_pruning: bool = True,
    round_to: int | None = 8,
    max_layer_ratio: float = 0.8,
    ignore: Sequence[str] = (),
    protect_heads: bool = False,
    data: str | Path | None = None,
    calib_batches: int = 4,
    calib_batch_size: int = 4,
    device: str = "cpu",
    seed: int = 0,
    initial_widths: dict[str, int] | None = None,
    planner_settings: Any = None,
    latency: LatencyTarget | None = None,
    log: Callable[[str], None] = _log,
) -> PruneResult:
    """Prune a detector (checkpoint path, yaml name or module — a module is copied, never changed).

    ``speed_up`` is base GFLOPs / pruned GFLOPs at ``imgsz``; the result lands in
    [speed_up, speed_up × 1.05] or says why not (``reached``/``note``) and keeps the best reached.
    ``prune_ratio`` instead removes that share of the prunable channels in one step.
    Heads prune inside, down to their prediction layers; ``protect_heads`` keeps every head whole.
    ``initial_widths`` (a previous result's) keeps ``max_layer_ratio`` relative to the widths before the
    first of several prunes. ``planner_settings`` go to a method's own planner (``method="pagcp"``:
    a ``yoloslim.prune.pagcp.PagcpSettings``; None = its defaults); such a method measures its loss on
    ``calib_batches`` training batches of ``data``, on the CPU. With ``latency``, ``speed_up`` is base / pruned
    latency measured on that runtime at ``imgsz`` (the planner predicts it from a per-layer latency table).
    """
    from yoloslim.engine.checkpoint import record_meta
    from yoloslim.engine.tasks import check_data_for, task_of
    from yoloslim.models.load import load_module
    from yoloslim.prune.calibration import gradient_statistics, loader_stride
    from yoloslim.prune.graph import prepare_for_pruning
    from yoloslim.prune.methods import sparse_training_warning
    from yoloslim.prune.planner import Planner
    from yoloslim.prune.task_losses import TaskLosses
    from yoloslim.report.metrics import count_params

    round_to = round_to or None
    check_prune_settings(method, speed_up, prune_ratio, max_steps, round_to, max_layer_ratio, calib_batches, data,
                         planner_settings, latency)
    chosen = get_method(method)
    module = copy.deepcopy(model) if isinstance(model, nn.Module) else load_module(str(model))
    module = module.float().cpu().eval()
    if data is not None:
        data = check_data_for(module, data)
    warning = sparse_training_warning(chosen, module)
    if warning:
        _warn(warning)

    started = time.perf_counter()
    losses = None
    if chosen.planner:
        losses = TaskLosses.load(data, calib_batches, imgsz, calib_batch_size, loader_stride(module), task_of(module))
        losses(module)  # a loss without task parts fails here, in one line, before the tracing
    base_params = count_params(module)
    prunable = prepare_for_pruning(module, imgsz=64, ignore=ignore, protect_heads=protect_heads)
    before = conv_channels(prunable.model)
    gradients = None
    if chosen.gradients:
        log(f"collecting {chosen.gradients} gradients of the detection loss on {calib_batches} calibration batch(es)")
        gradients = gradient_statistics(prunable.model, data, chosen.gradients, calib_batches, imgsz,
                                        batch=calib_batch_size, device=device)
    planner = Planner(prunable, chosen, imgsz, global_pruning=global_pruning, round_to=round_to,
                      max_layer_ratio=max_layer_ratio, gradients=gradients, seed=seed, log=log,
                      initial=dict(initial_widths or {}))
    if chosen.planner:
        planner = chosen.planner()(planner, losses, planner_settings)
    if latency is not None:
        outcome = planner.to_speed_up(speed_up, max_steps, latency_cost(planner, latency, speed_up, log))
    elif prune_ratio is not None:
        outcome = planner.to_ratio(prune_ratio)
    else:
        outcome = planner.to_speed_up(speed_up, max_steps)
    after = conv_channels(outcome.model)
    result = PruneResult(
        model=outcome.model, method=method, target=None if prune_ratio is not None else speed_up,
        prune_ratio=prune_ratio, speed_up=outcome.speed_up, reached=outcome.reached, note=outcome.note,
        base_gflops=outcome.base_gflops, gflops=outcome.gflops, base_params=base_params,
        params=count_params(outcome.model), seconds=time.perf_counter() - started, steps=outcome.steps, imgsz=imgsz,
        protected=list(prunable.protected), rewritten=list(prunable.rewritten),
        channels=[{"layer": n, "before": c, "after": after.get(n, c)} for n, c in before.items() if n in after],
        initial_widths=dict(planner.initial), details=outcome.details,
    )
    if not outcome.reached and prune_ratio is None:
        best = outcome.details["latency"]["measured_speed_up"] if latency else outcome.speed_up
        _warn(f"target {'latency ' if latency else ''}speed-up {speed_up:.2f}x not reached: {outcome.note}; best "
              f"reached {best:.3f}x — kept that result (raise --max-layer-ratio/--max-steps, protect fewer modules, "
              f"or lower the target)")
    record_meta(result.model, pruned=result.summary())
    log(f"pruned with {method}: {result.base_gflops:.2f} -> {result.gflops:.2f} GFLOPs ({result.speed_up:.3f}x), "
        f"{result.base_params:,} -> {result.params:,} params in {result.seconds:.1f} s")
    return result


def finetune(weights: str | Path, data: str | Path, epochs: int, imgsz: int = 640, batch: int = 16,
             device: str = "cpu", project: str | Path | None = None, name: str = "finetune",
             resume: bool | str = False, callbacks: Iterable = (), **overrides: Any):
    """Train a pruned checkpoint as it is (never rebuilt from its yaml); ``callbacks`` are ``(event, fn)``
    pairs, e.g. distillation. Raises if the saved models' parameter count drifts from the input's."""
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.engine.train import run_dir, train
    from yoloslim.report.metrics import count_params

    expected = count_params(checkpoint_module(read_checkpoint(weights)))
    result = train(str(weights), data, epochs=epochs, imgsz=imgsz, batch=batch, device=device,
                   project=run_dir(project, "finetune"), name=name, callbacks=callbacks, resume=resume, **overrides)
    for path in (result.best, result.last):
        if path.exists():
            got = count_params(checkpoint_module(read_checkpoint(path)))
            if got != expected:
                raise RuntimeError(f"{path} has {got:,} parameters but the pruned model has {expected:,}: "
                                   f"the trainer rebuilt the architecture")
    return result
