"""Statistics of BN scale factors |γ| that tell how far sparse training has gone.

``cut50``/``cut80`` are the |γ| thresholds a global slimming prune would use to remove 50% / 80%
of the penalized channels: every channel with |γ| strictly below the threshold goes.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

SMALL_GAMMA = 0.01
PRUNE_FRACTIONS = (0.5, 0.8)
COLUMNS = {
    "mean": "sparse/gamma_mean",
    "small": f"sparse/frac_gamma_lt_{SMALL_GAMMA:g}",
    "cut50": "sparse/cut50_gamma",
    "cut80": "sparse/cut80_gamma",
}


def abs_gammas(model: nn.Module, bn_names: Iterable[str]) -> torch.Tensor:
    """|γ| of the named BN layers, concatenated, as a float32 CPU vector."""
    modules = dict(model.named_modules())
    parts = [modules[name].weight.detach().abs().float().cpu().flatten() for name in bn_names]
    return torch.cat(parts) if parts else torch.zeros(0)


def cut_threshold(values: torch.Tensor, fraction: float) -> float:
    """The |γ| below which ``fraction`` of the channels lie."""
    ordered = values.sort().values
    return float(ordered[min(math.ceil(fraction * len(ordered)), len(ordered) - 1)])


def gamma_stats(values: torch.Tensor) -> dict[str, float]:
    """results.csv columns (see :data:`COLUMNS`) for one set of |γ| values."""
    if not len(values):
        return dict.fromkeys(COLUMNS.values(), float("nan"))
    return {
        COLUMNS["mean"]: float(values.mean()),
        COLUMNS["small"]: float((values < SMALL_GAMMA).float().mean()),
        COLUMNS["cut50"]: cut_threshold(values, PRUNE_FRACTIONS[0]),
        COLUMNS["cut80"]: cut_threshold(values, PRUNE_FRACTIONS[1]),
    }


def describe_stats(stats: dict[str, float]) -> str:
    return (f"mean|γ| {stats[COLUMNS['mean']]:.4g}  |γ|<{SMALL_GAMMA:g}: {100 * stats[COLUMNS['small']]:.1f}%  "
            f"cut@50% {stats[COLUMNS['cut50']]:.4g}  cut@80% {stats[COLUMNS['cut80']]:.4g}")
