"""|γ| of saved checkpoints and their verdicts, for comparing runs (``vis-bn``).

The same BNs are compared in every checkpoint: the ones its sparse run penalized (recorded in
the checkpoint), or — for a model that was never sparse-trained — the ones sparse training
would penalize, derived the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from yoloslim.errors import UserError

if TYPE_CHECKING:
    from yoloslim.sparsity.selection import BNSelection
    from yoloslim.sparsity.verdict import Verdict


def module_selection(module) -> BNSelection:
    """The BNs sparse training penalizes in ``module`` (or would), traced; ``module`` is made prunable in place."""
    from yoloslim.engine.checkpoint import model_meta
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.api import TRACE_IMGSZ, has_batchnorm
    from yoloslim.sparsity.selection import select_bns

    if not has_batchnorm(module):
        raise UserError("the model has no BatchNorm layers, so it has no γ to show — pass a model with BN")
    coupled = bool(model_meta(module).get("sparse", {}).get("penalize_coupled"))
    prunable = prepare_for_pruning(module, imgsz=TRACE_IMGSZ)
    return select_bns(module, build_dependency_graph(prunable), prunable.ignored_layers, coupled)


def penalized_bn_names(module) -> tuple[str, ...]:
    from yoloslim.engine.checkpoint import model_meta

    recorded = model_meta(module).get("sparse", {}).get("penalized")
    names = dict(module.named_modules())
    if recorded and all(n in names for n in recorded):
        return tuple(recorded)
    return module_selection(module).penalized


def checkpoint_gammas(path: str | Path) -> np.ndarray:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.sparsity.stats import abs_gammas

    module = checkpoint_module(read_checkpoint(path))
    return abs_gammas(module, penalized_bn_names(module)).numpy()


def run_label(path: str | Path) -> str:
    """``<run>/<file>`` for files in an ultralytics ``weights`` folder, else the file name."""
    path = Path(path)
    return f"{path.parents[1].name}/{path.name}" if path.parent.name == "weights" else path.name


def judged_gammas(module) -> tuple[np.ndarray, Verdict]:
    """|γ| of the BNs classic slimming ranks in a loaded model, and the verdict on them as they are now."""
    from yoloslim.engine.checkpoint import model_meta
    from yoloslim.sparsity.stats import abs_gammas
    from yoloslim.sparsity.verdict import Verdict, judge, layer_tops, shortcut_for

    selection = module_selection(module)
    values = abs_gammas(module, selection.penalized)
    sparse = model_meta(module).get("sparse", {})
    if sparse.get("measured_cut") and sparse.get("verdict"):  # measured on these very weights at the end of the run
        return values.numpy(), Verdict.from_record(sparse["verdict"])
    shortcut = shortcut_for(bool(sparse.get("penalize_coupled")))
    return values.numpy(), judge(values, layer_tops(module, selection), shortcut)


def compare_checkpoints(paths: Sequence[str | Path], out: str | Path) -> dict[str, tuple[np.ndarray, Verdict]]:
    """Overlay the |γ| distributions of ``paths`` in one figure at ``out``, each separated model's gap and
    safe cut marked; return the |γ| and verdict by label."""
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.sparsity.plots import plot_gamma_overlay

    judged: dict[str, tuple[np.ndarray, Verdict]] = {}
    for path in paths:
        label = run_label(path)
        judged[label if label not in judged else str(path)] = judged_gammas(checkpoint_module(read_checkpoint(path)))
    plot_gamma_overlay({k: v for k, (v, _) in judged.items()}, out, {k: j for k, (_, j) in judged.items()})
    return judged
