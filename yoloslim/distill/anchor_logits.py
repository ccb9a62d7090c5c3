"""Logit distillation between anchor-based YOLOv5 heads (``AnchorDetect``), objectness included.

Two such heads can be compared slot by slot — (image, anchor, row, column) — when they share strides,
class count and anchor sizes: each output (box, objectness, classes) of a slot then means the same thing
in both. Objectness is the head's own object/background decision, so it is taught on every slot: the
teacher's confident background is knowledge too. Box and class outputs carry knowledge where objects
are, so they are taught on the slots the YOLOv5 loss assigns to the ground truth; that assignment
depends only on box shapes, not on predictions, so it is the teacher's foreground as much as the
student's (the anchor-free heads use the teacher's task-aligned assignment instead, see ``heads.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from yoloslim.distill.losses import BOX_LOGIT_LOSSES, LogitLoss
from yoloslim.errors import UserError
from yoloslim.models.yolov5.head import AnchorDetect, decode_slots
from yoloslim.models.yolov5.loss import match_targets, targets_from_batch

ANCHOR_PIXEL_TOLERANCE = 1e-3  # anchor sizes that differ by less than this (pixels) are the same anchor


@dataclass(frozen=True)
class AnchorHeadLayout:
    strides: tuple[float, ...]
    nc: int
    anchors: tuple[tuple[tuple[float, float], ...], ...]  # per level, per anchor: (w, h) in input pixels


def is_anchor_head(model: nn.Module) -> bool:
    layers = getattr(model, "model", None)
    return isinstance(layers, nn.Sequential) and isinstance(layers[-1], AnchorDetect)


def _layout(model: nn.Module) -> AnchorHeadLayout:
    head = model.model[-1]
    pixels = head.anchor_wh * head.stride.view(-1, 1, 1)
    return AnchorHeadLayout(tuple(float(s) for s in head.stride), int(head.nc),
                            tuple(tuple((float(w), float(h)) for w, h in level) for level in pixels.tolist()))


def _same_anchors(a: AnchorHeadLayout, b: AnchorHeadLayout) -> bool:
    if [len(level) for level in a.anchors] != [len(level) for level in b.anchors]:
        return False
    flat = torch.tensor(a.anchors).flatten(), torch.tensor(b.anchors).flatten()
    return bool((flat[0] - flat[1]).abs().max() < ANCHOR_PIXEL_TOLERANCE)


def check_anchor_heads_compatible(student: nn.Module, teacher: nn.Module) -> AnchorHeadLayout:
    """Fail with one line unless both heads are anchor-based with the same strides, classes and anchors."""
    kinds = {role: type(m.model[-1]).__name__ for role, m in (("student", student), ("teacher", teacher))}
    if not (is_anchor_head(student) and is_anchor_head(teacher)):
        raise UserError(f"logit distillation needs heads of the same kind, but the student has {kinds['student']} "
                        f"and the teacher {kinds['teacher']} — distil features only (--feature without --logit)")
    s, t = _layout(student), _layout(teacher)
    differences = [f"{name}: student {getattr(s, name)} vs teacher {getattr(t, name)}"
                   for name in ("strides", "nc") if getattr(s, name) != getattr(t, name)]
    if not differences and not _same_anchors(s, t):
        differences.append(f"anchors: student {s.anchors} vs teacher {t.anchors}")
    if differences:
        raise UserError(f"logit distillation needs matching heads, but {'; '.join(differences)} — use a teacher "
                        f"with the same head or distil features only (--feature without --logit)")
    return s


def foreground(layout: AnchorHeadLayout, level: int, targets: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(bs, na, ny, nx) bool: the slots of ``level`` the YOLOv5 loss assigns ground truth to."""
    anchor_wh = torch.tensor(layout.anchors[level], device=out.device) / layout.strides[level]
    matches = match_targets(targets, anchor_wh, out.shape[2:4])
    mask = torch.zeros(out.shape[:4], dtype=torch.bool, device=out.device)
    mask[matches.image, matches.anchor, matches.row, matches.col] = True
    return mask


class AnchorLogitDistance(LogitLoss):
    """Logit L1/L2 for anchor heads: the p-norm distance between student and teacher probabilities (sigmoid
    of every output) — objectness averaged over all slots, plus box and class channels summed per slot and
    averaged over the assigned slots."""

    def __init__(self, layout: AnchorHeadLayout, p: int) -> None:
        super().__init__(layout)
        self.p = p

    def forward(self, student: list, teacher: list, batch: dict) -> torch.Tensor:
        targets = targets_from_batch(batch, student[0].device)
        obj_sum = fg_sum = torch.zeros((), device=student[0].device)
        obj_count = fg_count = 0
        for level, (s, t) in enumerate(zip(student, teacher)):
            diff = (s.float().sigmoid() - t.detach().float().sigmoid()).abs().pow(self.p)
            obj_sum = obj_sum + diff[..., 4].sum()
            obj_count += diff[..., 4].numel()
            fg = foreground(self.layout, level, targets, s)
            fg_sum = fg_sum + (diff[..., :4].sum(-1) + diff[..., 5:].sum(-1))[fg].sum()
            fg_count += int(fg.sum())
        return obj_sum / max(obj_count, 1) + fg_sum / max(fg_count, 1)


class AnchorAlignSoftTarget(LogitLoss):
    """AlignSoftTarget (see ``losses.AlignSoftTargetLoss``) for anchor heads: objectness and every class
    are binary problems whose teacher probabilities are soft targets (binary KL), each slot weighted by the
    IoU of the student's and the teacher's decoded boxes."""

    def forward(self, student: list, teacher: list, batch: dict) -> torch.Tensor:
        from ultralytics.utils.metrics import bbox_iou

        weighted = weights = torch.zeros((), device=student[0].device)
        for level, (s, t) in enumerate(zip(student, teacher)):
            s_logits, t_logits = s[..., 4:].float(), t[..., 4:].detach().float()
            target = t_logits.sigmoid()
            binary_kl = (F.binary_cross_entropy_with_logits(s_logits, target, reduction="none")
                         - F.binary_cross_entropy_with_logits(t_logits, target, reduction="none")).sum(-1)
            with torch.no_grad():
                stride = self.layout.strides[level]
                anchors = torch.tensor(self.layout.anchors[level], device=s.device)
                boxes = [decode_slots(x.detach().float(), stride, anchors)[..., :4] for x in (s, t)]
                weight = bbox_iou(boxes[0], boxes[1], xywh=True).squeeze(-1).clamp(min=0)
            weighted = weighted + (binary_kl * weight).sum()
            weights = weights + weight.sum()
        return weighted / weights.clamp(min=1)


def build_anchor_logit_loss(name: str, layout: AnchorHeadLayout) -> LogitLoss:
    """The anchor-head version of ``losses.build_logit_loss`` (same names: l1, l2, ast)."""
    if name in {"l1", "l2"}:
        return AnchorLogitDistance(layout, p=int(name[1]))
    if name == "ast":
        return AnchorAlignSoftTarget(layout)
    raise UserError(f"unknown logit loss {name!r} for an anchor head — choose one of {', '.join(BOX_LOGIT_LOSSES)}")
