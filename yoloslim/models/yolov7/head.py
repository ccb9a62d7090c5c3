"""YOLOv7's ``IDetect``: the YOLOv5 anchor head with a learned offset before and a learned scale after each
level's prediction conv (ImplicitA, ImplicitM).

Everything else — outputs, decoding, the ``anchor_wh`` buffer in grid units — is ``AnchorDetect``'s. The
original also keeps ``anchor_grid`` (anchors in pixels) as a buffer; here it is derived from ``anchor_wh``
and the strides, and the importer checks the file's copy against that. ``fuse_implicit`` folds both tensors
into the conv, which is what the original's reparameterization step does before deployment.
"""

from __future__ import annotations

import torch
from torch import nn

from yoloslim.models.yolov5.head import AnchorDetect
from yoloslim.models.yolov7.blocks import ImplicitA, ImplicitM


class IDetect(AnchorDetect):
    """``out = im · conv(x + ia)`` per level; ``anchors`` are per-level (w, h) sizes in input pixels."""

    def __init__(self, nc: int, anchors: list[list[float]], ch: list[int]):
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def predict(self, level: int, feature: torch.Tensor) -> torch.Tensor:
        return self.im[level](self.m[level](self.ia[level](feature)))

    def fuse(self) -> None:
        """ultralytics' ``fuse()`` calls this on every detect head: fold the implicit tensors too."""
        self.fuse_implicit()
        super().fuse()

    @torch.no_grad()
    def fuse_implicit(self) -> None:
        """Fold ia/im into the prediction convs: im·(W(x + a) + b) = (im·W)x + im·(W·a + b). Same outputs."""
        for conv, offset, scale in zip(self.m, self.ia, self.im):
            weight = conv.weight
            shift = weight.flatten(1) @ offset.implicit.flatten().to(weight)  # 1x1 conv of the constant offset
            scale_vec = scale.implicit.flatten().to(weight)
            conv.bias.copy_((conv.bias + shift) * scale_vec)
            weight.mul_(scale_vec.view(-1, 1, 1, 1))
        self.ia = nn.ModuleList(nn.Identity() for _ in self.m)
        self.im = nn.ModuleList(nn.Identity() for _ in self.m)
