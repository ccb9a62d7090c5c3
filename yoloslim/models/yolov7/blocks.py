"""The YOLOv7 layers ultralytics has no equivalent of: the pooling rows, SPPCSPC and the implicit tensors.

Module and parameter names follow the original's layout (``m``, ``cv1``…``cv7``, ``implicit``) so that a
checkpoint written by the original repo maps onto ours name for name. They live in the installed package,
so pickled yoloslim checkpoints reload with plain ``ultralytics.YOLO(path)``.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv


class MP(nn.Module):
    """Halve the resolution with a k×k max-pool of stride k (the ``MP`` rows between ELAN stages)."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """Max-pool that keeps the resolution (stride 1, padding k // 2): the tiny model's spatial pyramid rows."""

    def __init__(self, k: int = 3, s: int = 1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling inside a cross-stage-partial split.

    One path (cv1 → cv3 → cv4) is pooled at 5/9/13 and merged back (cv5 → cv6); the other path is a single
    1x1 conv (cv2); cv7 fuses both. The hidden width is ``c2 · 2e`` (= c2 with the default e = 0.5).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        hidden = int(2 * c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(hidden, hidden, 3, 1)
        self.cv4 = Conv(hidden, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)
        self.cv5 = Conv(4 * hidden, hidden, 1, 1)
        self.cv6 = Conv(hidden, hidden, 3, 1)
        self.cv7 = Conv(2 * hidden, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.cv4(self.cv3(self.cv1(x)))
        merged = self.cv6(self.cv5(torch.cat([pooled, *(pool(pooled) for pool in self.m)], 1)))
        return self.cv7(torch.cat((merged, self.cv2(x)), 1))


class ImplicitA(nn.Module):
    """A learned per-channel offset added to the head's input (starts near 0)."""

    def __init__(self, channels: int, mean: float = 0.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """A learned per-channel scale applied to the head's output (starts near 1)."""

    def __init__(self, channels: int, mean: float = 1.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
