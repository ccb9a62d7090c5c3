"""Split-free equivalents of ultralytics blocks that chunk a convolution's output.

Blocks such as ``C2f`` run one 1x1 conv and then ``chunk``/``split`` its output into halves.
torch-pruning cannot map channel indices through that pattern (it fails with IndexError),
and even when it could, pruning one half would break the equal-halves assumption. These
blocks compute exactly the same function with *two* 1x1 convs, one per half, so each half
is an ordinary conv that prunes on its own.

The classes live in the installed package so that pickled checkpoints containing them
reload with plain ``ultralytics.YOLO(path)``.
"""

from __future__ import annotations

import torch
from torch import nn


class AddResidual(nn.Module):
    """``x + body(x)`` — the residual step PSA applies inline, as a module."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SplitFreeChain(nn.Module):
    """ELAN-style block: ``fuse(cat(first(x), second(x), s1, s2, ...))`` with ``s_k = chain[k](s_{k-1})``.

    Equivalent to ultralytics ``C2f``, ``C3k2``, ``C2fCIB``, ``C2fPSA``, ``RepNCSPELAN4``, ``ELAN1``
    once their chunked ``cv1`` is split into ``first``/``second``.
    """

    def __init__(self, first: nn.Module, second: nn.Module, chain: nn.ModuleList, fuse: nn.Module, source: str):
        super().__init__()
        self.first = first
        self.second = second
        self.chain = chain
        self.fuse = fuse
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.first(x), self.second(x)]
        for block in self.chain:
            outputs.append(block(outputs[-1]))
        return self.fuse(torch.cat(outputs, 1))


class SplitFreeBranch(nn.Module):
    """CSP-style block: one half goes through ``body``, the other is carried over, then ``fuse(cat(...))``.

    Equivalent to ultralytics ``C2`` (body on the first half), ``PSA`` and ``C2PSA`` (body on the second).
    """

    def __init__(self, first: nn.Module, second: nn.Module, body: nn.Module, fuse: nn.Module, body_on_first: bool,
                 source: str):
        super().__init__()
        self.first = first
        self.second = second
        self.body = body
        self.fuse = fuse
        self.body_on_first = body_on_first
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.first(x), self.second(x)
        if self.body_on_first:
            a = self.body(a)
        else:
            b = self.body(b)
        return self.fuse(torch.cat((a, b), 1))


SPLIT_FREE_BLOCKS = (SplitFreeChain, SplitFreeBranch)
