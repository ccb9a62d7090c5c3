"""Prune a copy of a model with a torch-pruning group traced on the original.

Measuring a candidate pruning must leave the model being pruned untouched, and tracing a new
dependency graph for every candidate costs more than measuring it. A group lists, for every layer it
touches, the handler and the channel indices; making the same calls on the copy's layer of the same
name prunes the copy exactly as ``group.prune()`` would prune the original. Graph-only nodes
(concatenation, split, element-wise ops) hold no weights, and their handlers update the graph's own
index bookkeeping, so they are skipped: the graph stays in step with the original, not the copy.
"""

from __future__ import annotations

from torch import nn


def prune_copy(group, original: nn.Module, clone: nn.Module) -> None:
    """Apply ``group`` (from a graph of ``original``) to ``clone``, a deep copy of ``original``."""
    modules = {id(m): name for name, m in original.named_modules()}
    parameters = {id(p): name for name, p in original.named_parameters()}  # unwrapped ones (e.g. ImplicitA)
    for dep, idxs in group:
        target = dep.target.module
        plain = [getattr(i, "idx", i) for i in idxs]  # torch-pruning pairs each index with its root index
        if id(target) in parameters:
            name = parameters[id(target)]
            parent, _, attribute = name.rpartition(".")
            dep.handler.__self__.pruning_dim = dep.target.pruning_dim
            setattr(clone.get_submodule(parent), attribute, dep.handler(clone.get_parameter(name), plain))
        elif id(target) in modules:
            dep.handler.__self__.pruning_dim = dep.target.pruning_dim
            dep.handler(clone.get_submodule(modules[id(target)]), plain)
