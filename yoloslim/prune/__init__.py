"""Structured pruning: making models prunable, choosing channels, reaching a target speed-up.

``prepare_for_pruning`` rewrites a model into a torch-pruning-friendly form and lists the
layers whose output channels must stay: give a torch-pruning pruner
``ignored_layers=p.ignored_layers, forward_fn=p.forward_fn``.
"""

from yoloslim.prune.graph import Prunable, build_dependency_graph, prepare_for_pruning
from yoloslim.prune.trace import TraceForward, tensors_only

__all__ = ["Prunable", "TraceForward", "build_dependency_graph", "prepare_for_pruning", "tensors_only"]
