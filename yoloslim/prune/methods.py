"""The pruning methods by name: what ranks channels (importance) × which torch-pruning pruner applies it.

Importance and pruner are kept apart on purpose: at prune time only the ranking decides which
channels go, while the pruner class also carries the regulariser that sparse training uses
(``pruner.regularize``), so the same registry serves both steps. A method with a ``planner`` of its
own (PAGCP) decides every layer's ratio by measuring the loss; its importance only ranks channels
inside a layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch_pruning as tp
from torch import nn

from yoloslim.errors import UserError

GradientStat = Literal["mean", "squared"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    importance: Callable[[], tp.importance.Importance]
    pruner: type[tp.pruner.BasePruner] = tp.pruner.BasePruner
    pruner_options: dict[str, Any] = field(default_factory=dict)
    needs_sparse_training: bool = False
    gradients: GradientStat | None = None
    """Calibration gradients the importance reads from ``param.grad``: their mean (Taylor) or the
    mean of their squares (the diagonal Fisher approximation of the Hessian)."""
    planner: Callable[[], type] | None = None
    """Returns the planner class that replaces the importance-threshold planner (imported lazily): it sets
    per-layer ratios itself from the detection loss on calibration batches, so it takes a speed-up, never
    a prune ratio."""

    @property
    def needs_data(self) -> bool:
        """Whether the method reads calibration batches of --data."""
        return self.gradients is not None or self.planner is not None

    def make_pruner(self, model: nn.Module, example_inputs: Any, importance: tp.importance.Importance,
                    **options: Any) -> tp.pruner.BasePruner:
        return self.pruner(model, example_inputs, importance=importance, **{**self.pruner_options, **options})


def _pagcp_planner() -> type:
    from yoloslim.prune.pagcp import PagcpPlanner

    return PagcpPlanner


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("l1", "L1 norm of each filter", lambda: tp.importance.MagnitudeImportance(p=1)),
        Method("random", "random ranking (a baseline)", tp.importance.RandomImportance),
        Method("slim", "BN scale factors (network slimming)", tp.importance.BNScaleImportance,
               tp.pruner.BNScalePruner, needs_sparse_training=True),
        Method("group_slim", "BN scale factors with group lasso", tp.importance.BNScaleImportance,
               tp.pruner.BNScalePruner, {"group_lasso": True}, needs_sparse_training=True),
        Method("group_norm", "L2 norm over the whole dependency group",
               lambda: tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GroupNormPruner),
        Method("lamp", "layer-adaptive magnitude (LAMP) scores", lambda: tp.importance.LAMPImportance(p=2)),
        Method("group_sl", "group norm after group-sparsity training",
               lambda: tp.importance.GroupMagnitudeImportance(p=2, normalizer="max"), tp.pruner.GroupNormPruner,
               needs_sparse_training=True),
        Method("group_reg", "group norm after growing-regularisation training",
               lambda: tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GrowingRegPruner,
               needs_sparse_training=True),
        Method("group_hessian", "second-order (Hessian diagonal) saliency from calibration batches",
               tp.importance.GroupHessianImportance, gradients="squared"),
        Method("group_taylor", "first-order Taylor saliency from calibration batches",
               tp.importance.GroupTaylorImportance, gradients="mean"),
        Method("pagcp", "per-layer ratios set greedily by the measured task losses (PAGCP)",
               lambda: tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None,
                                                              target_types=[nn.modules.conv._ConvNd, nn.Linear]),
               planner=_pagcp_planner),
    )
}
DEFAULT_METHOD = "lamp"


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown pruning method {name!r} — choose one of: {', '.join(METHODS)}") from None


def sparse_training_warning(method: Method, model: nn.Module) -> str | None:
    """A one-line warning when ``method`` expects a sparse-trained model and this one has no such record."""
    from yoloslim.engine.checkpoint import model_meta

    if not method.needs_sparse_training or model_meta(model).get("sparse"):
        return None
    return (f"method {method.name!r} ranks channels by sparsity, but this model has no record of sparse training "
            f"(`yoloslim sparse`); the ranking will be close to magnitude pruning")
