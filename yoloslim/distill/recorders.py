"""Capture the outputs of chosen layers with forward hooks.

YOLO models are a flat ``model.model`` sequence whose entries are addressed by index (the
indices in model yamls and in ``Detect.f``), so a layer is chosen by its index. The hooks hold
tensors only until :meth:`OutputRecorder.clear`, so a teacher's activations do not outlive
the loss that uses them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from yoloslim.errors import UserError


def layer_list(model: nn.Module) -> nn.Sequential:
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential):
        raise UserError(f"{type(model).__name__} has no indexed layer list (model.model) — distil a YOLO model")
    return layers


def head_input_layers(model: nn.Module) -> list[int]:
    """Indices of the layers feeding the head (its ``f``): the default layers to match.

    Box heads read several levels (``Detect.f`` = [15, 18, 21]); a Classify head reads one, usually given
    relative to itself (``f`` = -1, the layer before it), as ultralytics resolves negative sources.
    """
    head = layer_list(model)[-1]
    sources = getattr(head, "f", None)
    if isinstance(sources, int):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not all(isinstance(i, int) for i in sources):
        raise UserError(f"cannot find the layers feeding {type(model).__name__}'s head — pass --layers explicitly")
    position = len(layer_list(model)) - 1
    return [i + position if i < 0 else i for i in sources]


def check_layers(model: nn.Module, layers: Sequence[int], role: str) -> list[int]:
    n = len(layer_list(model))
    bad = [i for i in layers if not 0 <= (i + n if i < 0 else i) < n - 1]
    if bad:
        raise UserError(f"{role} layer(s) {bad} out of range — the {role} has layers 0..{n - 2} before its head")
    return [i % n for i in layers]


class _Store:
    """Picklable forward hook writing a layer's output into its recorder's dict."""

    def __init__(self, outputs: dict[int, torch.Tensor], index: int) -> None:
        self.outputs = outputs
        self.index = index

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.outputs[self.index] = output


class OutputRecorder:
    """Records the outputs of ``layers`` of ``model`` on every forward until removed."""

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        self.layers = list(layers)
        self.outputs: dict[int, torch.Tensor] = {}
        modules = layer_list(model)
        self._handles = [modules[i].register_forward_hook(_Store(self.outputs, i)) for i in self.layers]

    def recorded(self) -> list[torch.Tensor]:
        missing = [i for i in self.layers if i not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output in the last forward pass")
        return [self.outputs[i] for i in self.layers]

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()
