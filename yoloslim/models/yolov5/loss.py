"""YOLOv5's training loss (``ComputeLoss`` facts), taking ultralytics' batch dict and returning its loss contract.

Assignment does not look at predictions: a ground-truth box goes to every anchor whose shape is within a
factor ``ANCHOR_T`` of it (in width and height), at the cell holding its centre plus the two neighbouring
cells nearest to that centre (left or right, up or down: a centre in the left half of its cell also goes
to the left neighbour). Predicted boxes are xy = 2σ − 0.5 (relative to the cell, so neighbours can reach
the centre) and wh = (2σ)² · anchor, scored by CIoU; the objectness target is that IoU (detached); the
class BCE applies only with more than one class. Objectness is averaged per level and weighted
[4.0, 1.0, 0.4] from fine to coarse.

The gains are the family's own (hyp.scratch-low, scaled as YOLOv5's train.py scales them by the number of
levels, classes and image size), not ultralytics' box/cls/dfl arguments, which belong to its anchor-free
losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from ultralytics.utils.metrics import bbox_iou

ANCHOR_T = 4.0  # a box matches an anchor when neither side differs by more than this factor
NEIGHBOUR_REACH = 0.5  # a centre this close to a cell edge also goes to the cell across that edge
OBJECTNESS_BALANCE = (4.0, 1.0, 0.4)  # per-level objectness weights, stride 8 / 16 / 32 (the builder allows 3 levels)
BOX_GAIN, OBJ_GAIN, CLS_GAIN = 0.05, 1.0, 0.5  # hyp.scratch-low
REFERENCE_LEVELS, REFERENCE_CLASSES, REFERENCE_IMGSZ = 3, 80, 640  # what the gains above were tuned for
LOSS_NAMES = ("box_loss", "obj_loss", "cls_loss")


@dataclass
class Matches:
    """Ground-truth boxes assigned to prediction slots of one level (one row per assignment)."""

    image: torch.Tensor  # (n,) batch index
    anchor: torch.Tensor  # (n,) anchor index within the level
    row: torch.Tensor  # (n,) grid row (y)
    col: torch.Tensor  # (n,) grid column (x)
    box: torch.Tensor  # (n, 4) target xy relative to the cell's corner, wh, all in grid units
    cls: torch.Tensor  # (n,) class index
    anchor_wh: torch.Tensor  # (n, 2) the matched anchor's size in grid units


def targets_from_batch(batch: dict, device: torch.device) -> torch.Tensor:
    """ultralytics' batch dict → (n, 6) rows of [image, class, x, y, w, h] with normalised xywh."""
    return torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"].view(-1, 4)),
                     1).to(device=device, dtype=torch.float32)


def match_targets(targets: torch.Tensor, anchor_wh: torch.Tensor, grid_hw: tuple[int, int]) -> Matches:
    """Assign (n, 6) normalised targets to the slots of one level with ``anchor_wh`` (na, 2) in grid units."""
    ny, nx = grid_hw
    size = targets.new_tensor([nx, ny])
    centre, wh = targets[:, 2:4] * size, targets[:, 4:6] * size
    ratio = wh[None] / anchor_wh[:, None]  # (na, nt, 2)
    anchor_idx, target_idx = (torch.max(ratio, 1 / ratio).amax(2) < ANCHOR_T).nonzero(as_tuple=True)
    centre, wh = centre[target_idx], wh[target_idx]
    near_low = (centre % 1 < NEIGHBOUR_REACH) & (centre > 1)  # also the left / upper neighbour
    far = size - centre
    near_high = (far % 1 < NEIGHBOUR_REACH) & (far > 1)  # also the right / lower neighbour
    own = torch.ones_like(near_low[:, 0])
    shifts = centre.new_tensor([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1]]) * NEIGHBOUR_REACH
    use = torch.stack((own, near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))  # (5, m)
    slot, pick = use.nonzero(as_tuple=True)
    cell = (centre[pick] + shifts[slot]).floor()
    cell = torch.minimum(cell.clamp(min=0), size - 1)
    targets = targets[target_idx[pick]]
    anchors = anchor_idx[pick]
    return Matches(
        image=targets[:, 0].long(), anchor=anchors, row=cell[:, 1].long(), col=cell[:, 0].long(),
        box=torch.cat((centre[pick] - cell, wh[pick]), 1), cls=targets[:, 1].long(), anchor_wh=anchor_wh[anchors],
    )


class YOLOv5Loss:
    """``criterion(preds, batch) -> (loss * batch_size, {box_loss, obj_loss, cls_loss})`` for ``AnchorDetect``.

    Subclasses change the assignment by overriding ``assign`` and the gains through ``GAINS``; the loss
    terms computed from the matches stay the same (YOLOv7's OTA loss does this).
    """

    GAINS = (BOX_GAIN, OBJ_GAIN, CLS_GAIN)  # box, objectness, class, before the level/class/size scaling

    def __init__(self, model: nn.Module) -> None:
        head = model.model[-1]
        self.nc = head.nc
        self.nl = head.nl
        self.anchor_wh = head.anchor_wh.detach().clone()
        box_gain, obj_gain, cls_gain = self.GAINS
        level_scale = REFERENCE_LEVELS / self.nl
        self.box_gain = box_gain * level_scale
        self.cls_gain = cls_gain * self.nc / REFERENCE_CLASSES * level_scale
        self.obj_gain = obj_gain * level_scale
        self.bce = nn.BCEWithLogitsLoss()

    def assign(self, raw: list[torch.Tensor], targets: torch.Tensor, batch: dict) -> list[Matches]:
        """Per level, the slots each of the (n, 6) targets trains: YOLOv5's shape-based matching."""
        anchor_wh = self.anchor_wh.to(targets.device)
        return [match_targets(targets, anchor_wh[level], out.shape[2:4]) for level, out in enumerate(raw)]

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raw = preds[1] if isinstance(preds, tuple) else preds  # eval mode gives (decoded, raw)
        device = raw[0].device
        targets = targets_from_batch(batch, device)
        lbox, lobj, lcls = (torch.zeros((), device=device) for _ in range(3))
        for level, (out, matches) in enumerate(zip(raw, self.assign(raw, targets, batch))):
            out = out.float()
            target_obj = torch.zeros(out.shape[:4], device=device)
            if len(matches.image):
                picked = out[matches.image, matches.anchor, matches.row, matches.col]
                xy = picked[:, :2].sigmoid() * 2 - 0.5
                wh = (picked[:, 2:4].sigmoid() * 2) ** 2 * matches.anchor_wh
                iou = bbox_iou(torch.cat((xy, wh), 1), matches.box, xywh=True, CIoU=True).squeeze(-1)
                lbox = lbox + (1.0 - iou).mean()
                target_obj[matches.image, matches.anchor, matches.row, matches.col] = iou.detach().clamp(min=0)
                if self.nc > 1:
                    target_cls = torch.zeros_like(picked[:, 5:])
                    target_cls[torch.arange(len(matches.cls), device=device), matches.cls] = 1.0
                    lcls = lcls + self.bce(picked[:, 5:], target_cls)
            lobj = lobj + self.bce(out[..., 4], target_obj) * OBJECTNESS_BALANCE[level]
        imgsz = max(batch["img"].shape[2:])
        loss = torch.stack((lbox * self.box_gain, lobj * self.obj_gain * (imgsz / REFERENCE_IMGSZ) ** 2,
                            lcls * self.cls_gain))
        return loss * raw[0].shape[0], dict(zip(LOSS_NAMES, loss.detach()))
