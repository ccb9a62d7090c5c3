"""|γ| of saved checkpoints, for comparing runs (``vis-bn``).

The same BNs are compared in every checkpoint: the ones its sparse run penalized (recorded in
the checkpoint), or — for a model that was never sparse-trained — the ones sparse training
would penalize, derived the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from yoloslim.errors import UserError


def penalized_bn_names(module) -> tuple[str, ...]:
    from yoloslim.engine.checkpoint import model_meta
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.api import TRACE_IMGSZ, has_batchnorm
    from yoloslim.sparsity.selection import select_bns

    recorded = model_meta(module).get("sparse", {}).get("penalized")
    names = dict(module.named_modules())
    if recorded and all(n in names for n in recorded):
        return tuple(recorded)
    if not has_batchnorm(module):
        raise UserError("the model has no BatchNorm layers, so it has no γ to show — pass a model with BN")
    prunable = prepare_for_pruning(module, imgsz=TRACE_IMGSZ)
    return select_bns(module, build_dependency_graph(prunable), prunable.ignored_layers).penalized


def checkpoint_gammas(path: str | Path) -> np.ndarray:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.sparsity.stats import abs_gammas

    module = checkpoint_module(read_checkpoint(path))
    return abs_gammas(module, penalized_bn_names(module)).numpy()


def run_label(path: str | Path) -> str:
    """``<run>/<file>`` for files in an ultralytics ``weights`` folder, else the file name."""
    path = Path(path)
    return f"{path.parents[1].name}/{path.name}" if path.parent.name == "weights" else path.name


def compare_checkpoints(paths: Sequence[str | Path], out: str | Path) -> dict[str, np.ndarray]:
    """Overlay the |γ| distributions of ``paths`` in one figure at ``out``; return them by label."""
    from yoloslim.sparsity.plots import plot_gamma_overlay

    series: dict[str, np.ndarray] = {}
    for path in paths:
        label = run_label(path)
        series[label if label not in series else str(path)] = checkpoint_gammas(path)
    plot_gamma_overlay(series, out)
    return series
