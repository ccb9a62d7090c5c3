"""Which layers have their width fixed by what the model outputs.

A detector's predictions are laid out channel by channel: box distances or DFL bins, class
scores, objectness, mask coefficients, keypoints, angles, a classifier's logits. The layers that
write those channels cannot lose any, and nothing else in a head needs protecting for that reason.
They are found from the model itself rather than from a list per head class: run the model once
with autograd on and walk back from every output tensor; the first conv or linear layer met on
each path is a *prediction layer*. Outputs that some layer also reads (the feature maps a head
returns next to its predictions) are not predictions and are not walked from.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloslim.prune.trace import tensors_only

LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
PARAM_LOOKAHEAD = 3  # autograd steps between an op and the parameter it reads (linear: transpose, then the weight)


def _parameters_read(fn) -> list[torch.Tensor]:
    """Parameters an autograd node takes directly or through a short chain of one-input nodes (a transpose)."""
    found = []
    for child, _ in fn.next_functions:
        for _ in range(PARAM_LOOKAHEAD):
            if child is None:
                break
            if hasattr(child, "variable"):
                found.append(child.variable)
                break
            inputs = [c for c, _ in child.next_functions if c is not None]
            child = inputs[0] if len(inputs) == 1 else None
    return found


def final_layer(model: nn.Module) -> nn.Module | None:
    """The last layer of an ultralytics model — the head, whatever its class."""
    layers = getattr(model, "model", None)
    return layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None


def _run_recording_reads(model: nn.Module, example_inputs: torch.Tensor) -> tuple[list[torch.Tensor], set]:
    """The model's output tensors, and the (address, shape) of every tensor a conv or linear layer read.

    Autograd records inside the head only (the whole model when it has no ultralytics layer list):
    the walk back from the outputs needs no more, and the body may be slow or hang under autograd.
    """
    read: set[tuple[int, tuple[int, ...]]] = set()
    alive: list[torch.Tensor] = []  # a freed input's memory could be reused by an output that no layer reads

    def record(_module, args) -> None:
        tensors = [t for t in args if isinstance(t, torch.Tensor)]
        alive.extend(tensors)
        read.update((t.data_ptr(), tuple(t.shape)) for t in tensors)

    head = final_layer(model)
    recorded = head if head is not None else model
    forward = recorded.forward

    def forward_with_grad(*args, **kwargs):
        with torch.enable_grad():
            return forward(*args, **kwargs)

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, LAYER_TYPES)]
    recorded.forward = forward_with_grad
    try:
        with torch.no_grad():
            outputs = tensors_only(model(example_inputs))
    finally:
        del recorded.forward
        for hook in hooks:
            hook.remove()
    return outputs, read


def prediction_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Names of the conv/linear layers whose output channels are the model's output format, in model order.

    Every head parameter must require grad (``prepare_for_pruning`` sets that), or its layer is invisible here.
    """
    owner = {id(p): name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)
             for p in m.parameters(recurse=False)}
    outputs, read = _run_recording_reads(model, example_inputs)
    predictions = [t for t in outputs if (t.data_ptr(), tuple(t.shape)) not in read]
    found: set[str] = set()
    seen: set = set()
    pending = [t.grad_fn for t in predictions if t.grad_fn is not None]
    while pending:
        fn = pending.pop()
        if fn in seen:
            continue
        seen.add(fn)
        layers = {owner[id(p)] for p in _parameters_read(fn) if id(p) in owner}
        if layers:
            found.update(layers)
            continue
        pending.extend(child for child, _ in fn.next_functions if child is not None)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(found, key=order.__getitem__)
