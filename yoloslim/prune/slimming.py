"""Classic network slimming (Liu et al., 2017): one global threshold on BN |γ|.

Channels are scored by the |γ| of the BatchNorm that follows their conv. Channels tied through a
residual add (``yoloslim.prune.graph.tied_by_residual``, the rule sparse training uses too) form one
torch-pruning group holding several BNs; the shortcut strategy decides how those BNs' masks combine:

- ``skip``: never prune such a group;
- ``first``: the group follows the mask of its first BN (in the model's module order);
- ``union``: a channel is kept if any BN of the group keeps it.

A group with several BNs in a chain and no add (a 1x1 conv then a depthwise conv) is not tied: it is
pruned under every strategy, and its channel is kept if any of its BNs keeps it, as in ``union``.

``layer_keep`` keeps at least that share of every layer (and one channel); ``round_up`` rounds each
pruned layer's kept count *up* to a multiple (8 suits deployment hardware), keeping the next
largest |γ| — torch-pruning's ``round_to`` rounds down instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.graph import tied_by_residual

SHORTCUT_STRATEGIES = ("skip", "first", "union")


@dataclass
class SlimGroup:
    root: nn.Conv2d
    name: str
    width: int
    coupled: bool
    scores: torch.Tensor  # per-channel |γ| after combining the group's BNs
    gammas: list[torch.Tensor]  # every BN's |γ| in the group: they all join the global threshold
    keep: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def _bn_scores(group, module_order: dict[nn.Module, int]) -> list[torch.Tensor]:
    """|γ| of every BN pruned by this group, aligned to the root's channel order, first BN first."""
    width = len(group[0].idxs)
    found = []
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.BatchNorm2d) and item.dep.handler == tp.prune_batchnorm_out_channels:
            idxs = [int(i) for i in item.idxs]
            roots = [int(i) for i in getattr(item, "root_idxs", idxs)]
            gamma = module.weight.detach().abs().float()
            aligned = torch.zeros(width)
            aligned[roots] = gamma[idxs]
            found.append((module_order.get(module, 0), aligned))
    return [g for _, g in sorted(found, key=lambda t: t[0])]


def collect_groups(dg: tp.DependencyGraph, model: nn.Module, ignored_layers: list[nn.Module],
                   shortcut: str) -> list[SlimGroup]:
    """Every conv-rooted group with BN-scored channels; coupled groups combined per ``shortcut``."""
    if shortcut not in SHORTCUT_STRATEGIES:
        raise UserError(f"unknown --shortcut {shortcut!r} — choose one of {', '.join(SHORTCUT_STRATEGIES)}")
    order = {m: i for i, m in enumerate(model.modules())}
    names = {m: n for n, m in model.named_modules()}
    plans = []
    for group in dg.get_all_groups(ignored_layers=ignored_layers, root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        bns = _bn_scores(group, order)
        if not bns:
            continue
        coupled = tied_by_residual(group)
        if coupled and shortcut == "skip":
            continue
        follow_first = coupled and shortcut == "first"
        scores = bns[0] if follow_first else torch.stack(bns).amax(0)
        plans.append(SlimGroup(root=root, name=names.get(root, "?"), width=len(scores), coupled=coupled,
                               scores=scores, gammas=bns[:1] if follow_first else bns))
    return plans


def _pool(plans: list[SlimGroup]) -> torch.Tensor:
    return torch.cat([g for p in plans for g in p.gammas])


def check_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise UserError(f"--prune-ratio must be in (0, 1), got {ratio}")


def below_cut(plans: list[SlimGroup], ratio: float) -> list[torch.Tensor]:
    """Per plan, a (n_bns, width) mask of the BN channels among the global bottom ``ratio`` share.

    Ranking (stable, ties in model order) rather than comparing to a value, so equal |γ| — e.g. a
    model that was never trained — still yields exactly the requested share.
    """
    pool = _pool(plans)
    cut = torch.zeros(len(pool), dtype=torch.bool)
    cut[torch.argsort(pool, stable=True)[: int(ratio * len(pool))]] = True
    masks, start = [], 0
    for plan in plans:
        rows = []
        for gamma in plan.gammas:
            rows.append(cut[start:start + len(gamma)])
            start += len(gamma)
        masks.append(torch.stack(rows))
    return masks


def global_threshold(plans: list[SlimGroup], ratio: float) -> float:
    """The |γ| at the cut: channels below it (or tied and earlier) are removed."""
    check_ratio(ratio)
    scores = _pool(plans).sort().values
    return float(scores[min(int(ratio * len(scores)), len(scores) - 1)])


def highest_safe_ratio(plans: list[SlimGroup]) -> float:
    """Largest ratio whose cut leaves every layer at least one channel."""
    limit = min(float(p.scores.max()) for p in plans)
    scores = _pool(plans)
    return float((scores < limit).sum()) / len(scores)


def assign_keep(plans: list[SlimGroup], ratio: float, layer_keep: float | None, round_up: int | None) -> None:
    """Fill each plan's kept indices (sorted) from the global cut, the per-layer floor and rounding."""
    for plan, cut in zip(plans, below_cut(plans, ratio)):
        survives = (~cut).any(0)
        n_keep = int(survives.sum())
        if layer_keep:
            n_keep = max(n_keep, math.ceil(layer_keep * plan.width), 1)
        if round_up and n_keep < plan.width:
            n_keep = min(plan.width, math.ceil(n_keep / round_up) * round_up)
        ranking = torch.argsort(survives.float() * (1 + plan.scores.max()) + plan.scores, descending=True,
                                stable=True)
        plan.keep = ranking[:n_keep].sort().values


def plan_slimming(plans: list[SlimGroup], ratio: float, layer_keep: float | None = None,
                  round_up: int | None = None) -> float:
    """Decide kept channels for every plan; returns the threshold. Fails if a layer would empty."""
    check_ratio(ratio)
    if not plans:
        raise UserError("no BatchNorm-scored conv channels to slim — the model has no prunable BN layers")
    if not layer_keep:
        empty = [p.name for p, cut in zip(plans, below_cut(plans, ratio)) if bool(cut.all(0).all())]
        if empty:
            raise UserError(
                f"--prune-ratio {ratio} would remove every channel of {empty[0]} (and {len(empty) - 1} more) — use "
                f"at most {highest_safe_ratio(plans):.3f}, or pass --layer-keep (e.g. 0.01)"
            )
    assign_keep(plans, ratio, layer_keep, round_up)
    return global_threshold(plans, ratio)


def apply_plans(dg: tp.DependencyGraph, plans: list[SlimGroup]) -> None:
    """Remove every channel not kept; each group prunes all of its coupled layers consistently."""
    for plan in plans:
        drop = sorted(set(range(plan.width)) - set(plan.keep.tolist()))
        if drop:
            dg.get_pruning_group(plan.root, tp.prune_conv_out_channels, drop).prune()
