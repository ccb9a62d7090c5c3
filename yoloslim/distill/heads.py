"""What logit distillation needs from YOLO box heads (Detect and the Segment, Pose and OBB heads built on it).

Per-anchor logits can only be compared when both heads lay out the same anchors (same strides,
hence the same grid for the same image) and the same channels (classes, DFL bins). Matched
anchors are the teacher's foreground: the task-aligned assigner run on the teacher's own
predictions against the ground truth picks the anchors where the teacher detects objects.
An OBB head's boxes are rotated (xywhr, decoded with its predicted angle), so for it the boxes,
the ground truth and the overlap are rotated too — the rotated assigner and ProbIoU its own loss
uses — rather than an axis-aligned envelope that would match anchors the OBB loss never trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from yoloslim.errors import UserError


@dataclass(frozen=True)
class HeadLayout:
    strides: tuple[float, ...]
    nc: int
    reg_max: int
    rotated: bool = False  # OBB heads: boxes are xywhr, their sides measured along the predicted angle


def head_layout(model: nn.Module, role: str) -> HeadLayout:
    from ultralytics.nn.modules.head import OBB

    head = model.model[-1]
    if not all(hasattr(head, a) for a in ("stride", "nc", "reg_max")):
        raise UserError(
            f"the {role}'s head ({type(head).__name__}) has no per-anchor class/box outputs — "
            f"use feature distillation (--feature) without --logit"
        )
    return HeadLayout(tuple(float(s) for s in head.stride), int(head.nc), int(head.reg_max), isinstance(head, OBB))


def check_heads_compatible(student: nn.Module, teacher: nn.Module):
    """Fail with every difference that makes per-anchor logits incomparable; the layout both heads share.

    Anchor-based YOLOv5 heads have their own layout and losses (``anchor_logits.py``).
    """
    from yoloslim.distill.anchor_logits import check_anchor_heads_compatible, is_anchor_head

    if is_anchor_head(student) or is_anchor_head(teacher):
        return check_anchor_heads_compatible(student, teacher)
    s, t = head_layout(student, "student"), head_layout(teacher, "teacher")
    differences = [
        f"{name}: student {getattr(s, name)} vs teacher {getattr(t, name)}"
        for name in ("strides", "nc", "reg_max", "rotated")
        if getattr(s, name) != getattr(t, name)
    ]
    if differences:
        raise UserError(
            f"logit distillation needs matching heads, but {'; '.join(differences)} — "
            f"use a teacher with the same head or distil features only (--feature without --logit)"
        )
    return s


def training_outputs(preds):
    """The raw head outputs from train-mode or eval-mode predictions: the dict (boxes, scores, feats and the
    task's extras) of anchor-free heads, the per-level list of anchor-based ones, a classifier's logits.
    Eval mode returns a tuple whose second item is that raw output (a classifier's: (probabilities, logits))."""
    if isinstance(preds, tuple):
        preds = preds[1]
    return preds.get("one2many", preds) if isinstance(preds, dict) else preds


def anchors(feats: list[torch.Tensor], strides: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    from ultralytics.utils.tal import make_anchors

    return make_anchors(feats, torch.tensor(strides, device=feats[0].device), 0.5)


def box_distribution(boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(b, 4*reg_max, A) box logits → (b, A, 4, reg_max) probabilities over DFL bins (raw sides if reg_max is 1)."""
    b, _, a = boxes.shape
    sides = boxes.float().view(b, 4, reg_max, a).permute(0, 3, 1, 2)
    return sides.softmax(-1) if reg_max > 1 else sides


def decode_boxes(outputs: dict[str, torch.Tensor], layout: HeadLayout) -> torch.Tensor:
    """A head's boxes in pixels: xyxy (b, A, 4), or xywhr (b, A, 5) for a rotated head."""
    from ultralytics.utils.tal import dist2bbox, dist2rbox

    points, stride = anchors(outputs["feats"], layout.strides)
    dist = box_distribution(outputs["boxes"], layout.reg_max)
    if layout.reg_max > 1:
        dist = dist @ torch.arange(layout.reg_max, device=dist.device, dtype=dist.dtype)
    else:
        dist = dist.squeeze(-1)
    if layout.rotated:
        angle = outputs["angle"].float().permute(0, 2, 1)  # (b, A, 1), radians
        return torch.cat([dist2rbox(dist, angle, points) * stride, angle], -1)
    return dist2bbox(dist, points, xywh=False) * stride


def box_overlap(a: torch.Tensor, b: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
    """(b, A) overlap of paired boxes from :func:`decode_boxes`: IoU, or ProbIoU for rotated boxes."""
    from ultralytics.utils.metrics import bbox_iou, probiou

    if layout.rotated:  # probiou takes (N, 5) rows
        return probiou(a.reshape(-1, 5), b.reshape(-1, 5)).view(a.shape[:-1]).clamp(min=0)
    return bbox_iou(a, b, xywh=False).squeeze(-1).clamp(min=0)


def ground_truth(
    batch: dict, batch_size: int, image_hw: tuple[int, int], layout: HeadLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad the batch's labels per image: labels (b, n, 1), pixel boxes (b, n, 4) xyxy — (b, n, 5) xywhr for a
    rotated head, whose batches carry normalised xywhr — and the valid mask (b, n, 1)."""
    from ultralytics.utils.ops import xywh2xyxy

    device = batch["img"].device
    width = 5 if layout.rotated else 4
    image_of = batch["batch_idx"].view(-1).long().to(device)
    counts = torch.bincount(image_of, minlength=batch_size)
    n = int(counts.max()) if len(image_of) else 0
    labels = torch.zeros(batch_size, n, 1, device=device)
    boxes = torch.zeros(batch_size, n, width, device=device)
    valid = torch.zeros(batch_size, n, 1, device=device, dtype=torch.bool)
    if n:
        order = torch.argsort(image_of, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(image_of), device=device) - starts[image_of[order]]
        rows = image_of[order]
        h, w = image_hw
        scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        labels[rows, slot] = batch["cls"].view(-1, 1).to(device).float()[order]
        given = batch["bboxes"].view(-1, width).to(device).float()[order]
        pixels = given[:, :4] * scale
        boxes[rows, slot] = torch.cat([pixels, given[:, 4:]], 1) if layout.rotated else xywh2xyxy(pixels)
        valid[rows, slot] = True
    return labels, boxes, valid


def teacher_foreground(teacher: dict[str, torch.Tensor], batch: dict, layout: HeadLayout) -> torch.Tensor:
    """(b, A) bool: anchors the task-aligned assigner gives to an object, judged on the teacher's predictions
    (the rotated assigner for a rotated head, as its loss assigns)."""
    from ultralytics.utils.tal import RotatedTaskAlignedAssigner, TaskAlignedAssigner

    feats, scores = teacher["feats"], teacher["scores"].float()
    b = scores.shape[0]
    image_hw = (int(feats[0].shape[2] * layout.strides[0]), int(feats[0].shape[3] * layout.strides[0]))
    labels, gt_boxes, valid = ground_truth(batch, b, image_hw, layout)
    points, stride = anchors(feats, layout.strides)
    kind = RotatedTaskAlignedAssigner if layout.rotated else TaskAlignedAssigner
    assigner = kind(topk=10, num_classes=layout.nc, alpha=0.5, beta=6.0, stride=list(layout.strides))
    with torch.no_grad():
        fg = assigner(
            scores.permute(0, 2, 1).sigmoid(),
            decode_boxes(teacher, layout).float(),
            (points * stride).float(),
            labels,
            gt_boxes,
            valid.float(),
        )[3]
    return fg.bool()
