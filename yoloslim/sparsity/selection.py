"""Which BatchNorm layers sparse training penalizes, derived from the pruning dependency graph.

A BN is penalized when its channels form (part of) a prunable channel group: a small γ then
means the channel can really be removed. Three kinds of BN are left alone, each with a reason:

* inside a protected layer (the detection head, or anything the pruner ignores);
* not in any prunable group (its channel count is fixed by the graph);
* tied to a residual add: zeroing one BN's γ does not zero the sum, so the channel only goes
  away if every coupled BN agrees — penalized only with ``penalize_coupled``.

The result is plain data (qualified parameter names and channel indices), so it can be pickled
into DDP workers and resolved again against each worker's own copy of the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import torch_pruning as tp
from torch import nn

from yoloslim.prune.graph import tied_by_residual

EXCLUDED_PROTECTED = "protected (head or ignored layer)"
EXCLUDED_UNPRUNABLE = "channels not prunable"
EXCLUDED_COUPLED = "tied to a residual add"


@dataclass(frozen=True)
class Member:
    """The slice of one parameter that belongs to a channel group.

    ``index[k]`` is the position along ``dim`` (0 = output, 1 = input channels) that holds the
    group's channel ``root[k]``.
    """

    param: str
    dim: int
    index: tuple[int, ...]
    root: tuple[int, ...]
    is_bn: bool


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that can only be pruned together, and every weight slice they own."""

    channels: int
    members: tuple[Member, ...]

    @property
    def bn_members(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.is_bn)


@dataclass(frozen=True)
class BNSelection:
    penalized: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    groups: tuple[ChannelGroup, ...] = ()

    @property
    def gamma_params(self) -> tuple[str, ...]:
        return tuple(f"{name}.weight" for name in self.penalized)

    def describe(self) -> str:
        """One line: how many BNs are penalized, how many excluded and why."""
        reasons = Counter(self.excluded.values())
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        summary = f"{len(self.penalized)} BN layers penalized, {len(self.excluded)} excluded"
        return f"{summary} ({why})" if why else summary


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine


def _protected_names(model: nn.Module, ignored_layers: Iterable[nn.Module]) -> set[str]:
    """Qualified names of every module inside an ignored layer (the layer itself included)."""
    ignored = {id(m) for m in ignored_layers}
    names: set[str] = set()
    for name, module in model.named_modules():
        if id(module) in ignored:
            names.update(f"{name}.{sub}" if sub else name for sub, _ in module.named_modules())
    return names


def _member(graph: tp.DependencyGraph, name: str, module: nn.Module, item) -> Member | None:
    """The weight slice a group item touches, for the layer types whose weight layout is known."""
    out = graph.is_out_channel_pruning_fn(item.dep.handler)
    if _is_bn(module):
        if not out:
            return None
    elif isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed):
        if not out and getattr(module, "groups", 1) > 1:
            return None  # grouped conv: its input slice is already covered by its output member
    else:
        return None
    return Member(
        param=f"{name}.weight",
        dim=0 if out else 1,
        index=tuple(int(i) for i in item.idxs),
        root=tuple(int(i) for i in item.root_idxs),
        is_bn=_is_bn(module),
    )


def select_bns(
    model: nn.Module,
    graph: tp.DependencyGraph,
    ignored_layers: Iterable[nn.Module] = (),
    penalize_coupled: bool = False,
) -> BNSelection:
    """Split the model's BN layers into penalized and excluded, using the traced ``graph``."""
    ignored_layers = list(ignored_layers)
    names = {module: name for name, module in model.named_modules()}
    protected = _protected_names(model, ignored_layers)
    all_bns = [name for name, m in model.named_modules() if _is_bn(m)]
    excluded = {name: EXCLUDED_PROTECTED for name in all_bns if name in protected}
    penalized: list[str] = []
    groups: list[ChannelGroup] = []
    root_types = [nn.modules.conv._ConvNd, nn.Linear]
    for group in graph.get_all_groups(ignored_layers=ignored_layers, root_module_types=root_types):
        group_bns = [names[dep.target.module] for dep, _ in group
                     if _is_bn(dep.target.module) and graph.is_out_channel_pruning_fn(dep.handler)]
        group_bns = [n for n in group_bns if n not in protected]
        if not group_bns:
            continue
        if not penalize_coupled and tied_by_residual(group):
            excluded.update(dict.fromkeys(group_bns, EXCLUDED_COUPLED))
            continue
        members = []
        for item in group.items:
            module = item.dep.target.module
            name = names.get(module)
            if name is None or name in protected:
                continue
            member = _member(graph, name, module, item)
            if member is not None:
                members.append(member)
        penalized.extend(n for n in group_bns if n not in penalized)
        groups.append(ChannelGroup(channels=len(group[0].idxs), members=tuple(members)))
    for name in all_bns:
        if name not in penalized and name not in excluded:
            excluded[name] = EXCLUDED_UNPRUNABLE
    order = {name: i for i, name in enumerate(all_bns)}
    return BNSelection(
        penalized=tuple(sorted(penalized, key=order.__getitem__)),
        excluded=dict(sorted(excluded.items(), key=lambda kv: order[kv[0]])),
        groups=tuple(groups),
    )
