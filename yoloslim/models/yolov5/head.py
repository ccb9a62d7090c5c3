"""The anchor-based detection head of YOLOv5 (v6.0-v7.0), as a subclass of ultralytics' ``Detect``.

Being a ``Detect`` is what makes ultralytics treat it as a detection head: the exporter sets its export
flags only on ``Detect`` subclasses, and fusing, the trainer and the validator look for one. The layout
is the original's — ``m`` holds one 1x1 conv per level to ``na * (5 + nc)`` channels — except that the
(nl, na, 2) anchor sizes in grid units live in the buffer ``anchor_wh``: ``Detect`` already uses the name
``anchors`` (a class attribute for its anchor-free grid points), which hides a buffer of that name. The
importer renames the original's ``anchors`` entry.

Outputs: in training, per level the raw conv output viewed as (bs, na, ny, nx, 5 + nc) — box (4),
objectness, classes. In eval, ``(y, raw)`` where ``y`` is (bs, 4 + nc, N): boxes as xywh in input pixels
and objectness x class probability as the class scores. That tensor is what ultralytics' NMS, validator
and exporter expect from every detect head, and it yields the detections YOLOv5's own NMS gives. In
export mode only ``y`` is returned.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules.head import Detect
from ultralytics.utils.ops import xywh2xyxy

PRIOR_OBJECTS_PER_640 = 5  # objectness prior for the bias init: ~5 objects in a 640x640 image (as ultralytics' Detect)


def decode_slots(raw: torch.Tensor, stride: float | torch.Tensor, anchor_pixels: torch.Tensor) -> torch.Tensor:
    """(bs, na, ny, nx, 5 + nc) raw outputs → the same shape, sigmoided, with the box as xywh in input pixels.

    xy = (2σ − 0.5 + cell) · stride and wh = (2σ)² · anchor: a prediction reaches half a cell beyond its own
    and up to 4x its anchor, the range the loss's assignment (neighbour cells, shape ratio < 4) asks for.
    """
    _, na, ny, nx, _ = raw.shape
    p = raw.sigmoid()
    rows, cols = torch.meshgrid(torch.arange(ny, device=raw.device, dtype=p.dtype),
                                torch.arange(nx, device=raw.device, dtype=p.dtype), indexing="ij")
    cells = torch.stack((cols, rows), -1).view(1, 1, ny, nx, 2)
    xy = (p[..., :2] * 2 - 0.5 + cells) * stride
    wh = (p[..., 2:4] * 2) ** 2 * anchor_pixels.view(1, na, 1, 1, 2).to(p.dtype)
    return torch.cat((xy, wh, p[..., 4:]), -1)


class AnchorDetect(Detect):
    """YOLOv5's anchor-based head; ``anchors`` are per-level (w, h) anchor sizes in input pixels."""

    cv2 = None  # ultralytics inspects Detect.cv2 (its DFL box branch) when fusing; this head has none

    def __init__(self, nc: int, anchors: list[list[float]], ch: list[int]):
        nn.Module.__init__(self)  # Detect.__init__ would build anchor-free DFL branches
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.stride = torch.zeros(self.nl)
        self.register_buffer("anchor_wh", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    @property
    def end2end(self) -> bool:
        """Always False: there is no NMS-free branch, so a request for one (ultralytics makes it) changes nothing."""
        return False

    @end2end.setter
    def end2end(self, value: bool) -> None:
        """Ignored, see the getter (``Detect``'s setter would warn about its missing branches)."""

    def forward(self, x: list[torch.Tensor]):
        raw = []
        for level, feature in enumerate(x):
            bs, _, ny, nx = feature.shape
            raw.append(self.predict(level, feature).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2))
        if self.training:
            return raw
        y = self.decode(raw)
        return y if self.export else (y, raw)

    def predict(self, level: int, feature: torch.Tensor) -> torch.Tensor:
        """The prediction conv of one level: (bs, c, ny, nx) → (bs, na · (5 + nc), ny, nx)."""
        return self.m[level](feature)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw per-level outputs → (bs, 4 + nc, N): xywh (or xyxy when exporting with NMS) and obj x cls scores."""
        levels = []
        for level, out in enumerate(raw):
            stride = self.stride[level]
            p = decode_slots(out, stride, self.anchor_wh[level] * stride)
            levels.append(torch.cat((p[..., :4], p[..., 5:] * p[..., 4:5]), -1).flatten(1, 3))
        y = torch.cat(levels, 1)
        if self.xyxy:
            y = torch.cat((xywh2xyxy(y[..., :4]), y[..., 4:]), -1)
        return y.permute(0, 2, 1)

    def bias_init(self) -> None:
        """Start objectness near the prior share of object cells per level, and classes at a uniform prior.

        With one class the class output is never trained (the loss has no class term), so it starts near
        1 and the score is the objectness.
        """
        class_prior = min(1.0 / self.nc, 0.99)
        for conv, stride in zip(self.m, self.stride.tolist()):
            bias = conv.bias.detach().view(self.na, self.no)
            bias[:, 4] = math.log(PRIOR_OBJECTS_PER_640 / (640 / stride) ** 2)
            bias[:, 5:] = math.log(class_prior / (1 - class_prior))
