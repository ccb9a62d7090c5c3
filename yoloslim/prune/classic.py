"""``slim_prune_model()``: classic network slimming on a detector (one global |γ| threshold).

This is the seeds' ``--prune-ratio`` semantics for ``--method slim``; the speed-up planner in
:mod:`yoloslim.prune.api` stays available with ``--speed-up``. Which channels are coupled comes
from the dependency graph of the prunable (rewritten) model, not from class names.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

from torch import nn

from yoloslim.prune.api import PruneResult, conv_channels
from yoloslim.prune.slimming import SHORTCUT_STRATEGIES, apply_plans, collect_groups, plan_slimming

METHOD = "slim"


def slim_prune_model(model: str | Path | nn.Module, prune_ratio: float, shortcut: str = "skip",
                     layer_keep: float | None = None, round_up: int | None = None, imgsz: int = 640,
                     ignore: Sequence[str] = (), protect_heads: bool = False) -> PruneResult:
    """Remove the ``prune_ratio`` share of BN channels with the smallest |γ| (a module is copied)."""
    from yoloslim.engine.checkpoint import record_meta
    from yoloslim.errors import UserError
    from yoloslim.models.load import load_module
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.prune.methods import get_method, sparse_training_warning
    from yoloslim.prune.planner import count_gflops
    from yoloslim.report.metrics import count_params

    if shortcut not in SHORTCUT_STRATEGIES:
        raise UserError(f"unknown --shortcut {shortcut!r} — choose one of {', '.join(SHORTCUT_STRATEGIES)}")
    if layer_keep is not None and not 0.0 < layer_keep <= 1.0:
        raise UserError(f"--layer-keep must be in (0, 1], got {layer_keep}")
    if round_up is not None and round_up < 1:
        raise UserError(f"--round-up must be a positive channel multiple, got {round_up}")
    module = copy.deepcopy(model) if isinstance(model, nn.Module) else load_module(str(model))
    module = module.float().cpu().eval()
    warning = sparse_training_warning(get_method(METHOD), module)
    if warning:
        from ultralytics.utils import LOGGER

        LOGGER.warning(warning)

    started = time.perf_counter()
    base_params, base_gflops = count_params(module), count_gflops(module, imgsz)
    prunable = prepare_for_pruning(module, imgsz=64, ignore=ignore, protect_heads=protect_heads)
    before = conv_channels(prunable.model)
    graph = build_dependency_graph(prunable)
    plans = collect_groups(graph, prunable.model, prunable.ignored_layers, shortcut)
    threshold = plan_slimming(plans, prune_ratio, layer_keep=layer_keep, round_up=round_up)
    apply_plans(graph, plans)
    gflops = count_gflops(prunable.model, imgsz)
    after = conv_channels(prunable.model)
    note = (f"global |γ| threshold {threshold:.4g}; shortcut={shortcut}, layer_keep={layer_keep}, "
            f"round_up={round_up}")
    result = PruneResult(
        model=prunable.model, method=METHOD, target=None, prune_ratio=prune_ratio, speed_up=base_gflops / gflops,
        reached=True, note=note, base_gflops=base_gflops, gflops=gflops, base_params=base_params,
        params=count_params(prunable.model), seconds=time.perf_counter() - started, steps=1, imgsz=imgsz,
        protected=list(prunable.protected), rewritten=list(prunable.rewritten),
        channels=[{"layer": n, "before": c, "after": after.get(n, c)} for n, c in before.items() if n in after],
    )
    record_meta(result.model, pruned={**result.summary(), "classic": {"threshold": threshold, "shortcut": shortcut,
                                                                       "layer_keep": layer_keep,
                                                                       "round_up": round_up}})
    return result
