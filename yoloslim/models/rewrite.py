"""Rewrite blocks that chunk a conv's output into split-free equivalents (see ``blocks.py``).

One mechanism serves every family: the chunked 1x1 conv is cut into two convs along its
output channels (weights, bias and BatchNorm statistics sliced, ``eps``/``momentum`` kept
by copying the module), and the block's body is moved unchanged into one of two generic
shapes — an ELAN-style chain or a CSP-style branch. A table maps each ultralytics class to
the parts that fill those shapes.
"""

from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from yoloslim.models.blocks import AddResidual, SplitFreeBranch, SplitFreeChain

# Attributes ultralytics' parse_model puts on top-level layers; the model's forward needs f and i.
LAYER_ATTRIBUTES = ("f", "i", "type", "np")


def _slice_out_channels(part: nn.Module, start: int, stop: int) -> None:
    """Keep output channels ``start:stop`` of every Conv2d/BatchNorm2d inside ``part`` (a copy)."""
    for layer in part.modules():
        if isinstance(layer, nn.Conv2d):
            layer.weight = nn.Parameter(layer.weight.detach()[start:stop].clone(), layer.weight.requires_grad)
            if layer.bias is not None:
                layer.bias = nn.Parameter(layer.bias.detach()[start:stop].clone(), layer.bias.requires_grad)
            layer.out_channels = stop - start
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.affine:
                layer.weight = nn.Parameter(layer.weight.detach()[start:stop].clone(), layer.weight.requires_grad)
                layer.bias = nn.Parameter(layer.bias.detach()[start:stop].clone(), layer.bias.requires_grad)
            if layer.running_mean is not None:
                layer.running_mean = layer.running_mean[start:stop].clone()
                layer.running_var = layer.running_var[start:stop].clone()
            layer.num_features = stop - start


def _is_sliceable(conv: nn.Module) -> bool:
    """A conv block we can cut by output channel: ungrouped Conv2d (+ BatchNorm) and parameter-free activations."""
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1 or convs[0].groups != 1:
        return False
    others = [m for m in conv.modules() if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m is not conv]
    return not any(True for m in others for _ in m.parameters(recurse=False))


def split_conv(conv: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Two copies of ``conv`` that produce what ``conv(x).chunk(2, 1)`` produces."""
    total = next(m for m in conv.modules() if isinstance(m, nn.Conv2d)).out_channels
    first_size = (total + 1) // 2  # torch.chunk puts the larger part first
    first, second = copy.deepcopy(conv), copy.deepcopy(conv)
    _slice_out_channels(first, 0, first_size)
    _slice_out_channels(second, first_size, total)
    return first, second


def _from_c2f(block: nn.Module) -> nn.Module:
    first, second = split_conv(block.cv1)
    return SplitFreeChain(first, second, block.m, block.cv2, source=type(block).__name__)


def _from_elan(block: nn.Module) -> nn.Module:
    first, second = split_conv(block.cv1)
    return SplitFreeChain(first, second, nn.ModuleList([block.cv2, block.cv3]), block.cv4, source=type(block).__name__)


def _from_c2(block: nn.Module) -> nn.Module:
    first, second = split_conv(block.cv1)
    return SplitFreeBranch(first, second, block.m, block.cv2, body_on_first=True, source=type(block).__name__)


def _from_psa(block: nn.Module) -> nn.Module:
    first, second = split_conv(block.cv1)
    body = nn.Sequential(AddResidual(block.attn), AddResidual(block.ffn))
    return SplitFreeBranch(first, second, body, block.cv2, body_on_first=False, source=type(block).__name__)


def _from_c2psa(block: nn.Module) -> nn.Module:
    first, second = split_conv(block.cv1)
    return SplitFreeBranch(first, second, block.m, block.cv2, body_on_first=False, source=type(block).__name__)


def _rewrite_table() -> list[tuple[type, Callable[[nn.Module], nn.Module]]]:
    from ultralytics.nn.modules.block import C2, C2PSA, PSA, C2f, RepNCSPELAN4

    return [(C2f, _from_c2f), (RepNCSPELAN4, _from_elan), (C2, _from_c2), (PSA, _from_psa), (C2PSA, _from_c2psa)]


def _converter_for(module: nn.Module, table) -> Callable[[nn.Module], nn.Module] | None:
    """The converter of the table class ``module`` derives from, if it kept that class's forward."""
    for cls, convert in table:
        if isinstance(module, cls) and type(module).forward is cls.forward and _is_sliceable(module.cv1):
            return convert
    return None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def rewrite_for_pruning(model: nn.Module) -> list[str]:
    """Replace every chunking block in ``model`` (in place) by its split-free equivalent.

    Returns the names of the replaced modules. Idempotent: rewritten blocks are not matched again.
    Inner blocks are converted before the blocks that contain them.
    """
    table = _rewrite_table()
    candidates = [(name, m) for name, m in model.named_modules() if name and _converter_for(m, table)]
    rewritten = set()
    for name, old in sorted(candidates, key=lambda item: item[0].count("."), reverse=True):
        new = _converter_for(old, table)(old)
        for attr in LAYER_ATTRIBUTES:
            if hasattr(old, attr):
                setattr(new, attr, getattr(old, attr))
        new.train(old.training)
        _replace(model, name, new)
        rewritten.add(name)
    return [name for name, _ in candidates if name in rewritten]
