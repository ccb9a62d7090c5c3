"""YOLOv7's training loss with OTA assignment (the facts of the original's ``ComputeLossOTA``).

Assignment runs in two stages. YOLOv5's shape-based matching (``match_targets``) proposes candidate slots
— (level, image, anchor, row, column) — for every ground-truth box. Then, per image and across all levels
at once, the candidates compete on the current predictions: each candidate's predicted box is decoded to
input pixels and compared with every target of its image, and the cost of a (target, candidate) pair is
the class BCE of sqrt(class probability x objectness) against the target's one-hot class plus
``IOU_COST_WEIGHT`` x −log(IoU). A target keeps its k cheapest candidates, with k the integer part of the
sum of its ``DYNAMIC_K_TOP`` best IoUs (at least 1); a candidate kept by several targets goes to the one
for which it is cheapest. Every candidate of the image competes for every target, not only the slots
proposed for that target.

The loss terms on the resulting matches are YOLOv5's (CIoU box loss, IoU objectness targets, class BCE
with more than one class, per-level objectness weights), computed by ``YOLOv5Loss``; this class replaces
the assignment and the gains (yolov7's hyp.scratch.p5, scaled by levels, classes and image size the way
the original's train.py scales them). Unlike the original, candidates are de-duplicated (a slot proposed
by two targets competes once, so a slot trains one target), the class cost never becomes infinite,
targets are scaled to pixels by the image's own width and height (non-square batches), and nothing
assumes a CUDA device.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.metrics import box_iou
from ultralytics.utils.ops import xywh2xyxy

from yoloslim.models.yolov5.loss import LOSS_NAMES, Matches, YOLOv5Loss, match_targets

__all__ = ["LOSS_NAMES", "OTALoss", "dynamic_k", "ota_assign", "ota_cost"]

BOX_GAIN, OBJ_GAIN, CLS_GAIN = 0.05, 0.7, 0.3  # hyp.scratch.p5
DYNAMIC_K_TOP = 10  # a target's k is the summed IoU of at most this many of its best candidates
IOU_COST_WEIGHT = 3.0  # weight of −log(IoU) against the class BCE in the assignment cost
IOU_COST_EPS = 1e-8  # inside the log, so a candidate that misses the target entirely costs a finite amount
LOG_FLOOR = -100.0  # log-probabilities are clamped here, as torch's binary_cross_entropy does


def dynamic_k(iou: torch.Tensor) -> torch.Tensor:
    """(targets, candidates) IoUs → (targets,) how many candidates each target keeps: ⌊sum of top IoUs⌋, ≥ 1."""
    top = iou.topk(min(DYNAMIC_K_TOP, iou.shape[1]), dim=1).values
    return top.sum(1).floor().long().clamp(min=1)


def ota_cost(iou: torch.Tensor, target_cls: torch.Tensor, cand_scores: torch.Tensor) -> torch.Tensor:
    """(targets, candidates) assignment cost: class BCE summed over classes + ``IOU_COST_WEIGHT`` x −log(IoU).

    ``cand_scores`` (candidates, nc) are the probabilities compared with the one-hot target class. With a
    one-hot target the BCE summed over classes is Σ_c −log(1 − p_c) − log p_t + log(1 − p_t), so only the
    (candidates, nc) log-probabilities and a gather are needed, never a (targets, candidates, nc) tensor.
    """
    log_p = cand_scores.log().clamp(min=LOG_FLOOR)
    log_not_p = torch.log1p(-cand_scores).clamp(min=LOG_FLOOR)
    all_negative = -log_not_p.sum(1)  # (candidates,) the BCE if every class were a negative
    own_class = (log_not_p - log_p).T[target_cls]  # (targets, candidates) correction for the target's class
    return all_negative + own_class - IOU_COST_WEIGHT * torch.log(iou + IOU_COST_EPS)


def ota_assign(target_boxes: torch.Tensor, target_cls: torch.Tensor, cand_boxes: torch.Tensor,
               cand_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OTA assignment within one image: which candidate trains which target.

    Args:
        target_boxes: (T, 4) ground-truth boxes, xyxy.
        target_cls: (T,) their class indices.
        cand_boxes: (C, 4) the candidates' predicted boxes, xyxy in the same units.
        cand_scores: (C, nc) the candidates' class scores, sqrt(σ(class logit) · σ(objectness logit)).

    Returns:
        ``(target_index, candidate_index)``, one entry per assigned candidate in increasing candidate order;
        each candidate appears at most once, and target t at most ``dynamic_k`` [t] times.
    """
    num_targets, num_cands = len(target_boxes), len(cand_boxes)
    empty = target_cls.new_zeros(0, dtype=torch.long)
    if not num_targets or not num_cands:
        return empty, empty
    iou = box_iou(target_boxes.float(), cand_boxes.float())
    cost = ota_cost(iou, target_cls.long(), cand_scores.float())
    k = dynamic_k(iou)
    order = cost.argsort(dim=1, stable=True)  # ties keep the lower candidate index first
    ranks = torch.arange(num_cands, device=cost.device).expand(num_targets, num_cands)
    wanted = torch.empty_like(order).scatter_(1, order, ranks) < k[:, None]  # each target's k cheapest
    # a candidate wanted by several targets goes to the cheapest of them; with a single taker that is the taker
    owner = cost.masked_fill(~wanted, torch.inf).argmin(0)
    cand_index = wanted.any(0).nonzero().squeeze(1)
    return owner[cand_index], cand_index


class OTALoss(YOLOv5Loss):
    """``criterion(preds, batch) -> (loss * batch_size, {box_loss, obj_loss, cls_loss})`` with OTA assignment.

    Needs of the model only its head ``model.model[-1]``: ``nc``, ``nl``, ``na``, ``anchor_wh`` (nl, na, 2)
    in grid units and ``stride`` (nl,).
    """

    GAINS = (BOX_GAIN, OBJ_GAIN, CLS_GAIN)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        head = model.model[-1]
        self.na = head.na
        self.stride = torch.as_tensor(head.stride, dtype=torch.float32).detach().clone()

    def assign(self, raw: list[torch.Tensor], targets: torch.Tensor, batch: dict) -> list[Matches]:
        """Per level, the slots each of the (n, 6) normalised targets trains after OTA selection."""
        device = targets.device
        grids = [tuple(out.shape[2:4]) for out in raw]
        anchor_wh = self.anchor_wh.to(device)
        proposals = [match_targets(targets, anchor_wh[level], grid) for level, grid in enumerate(grids)]
        slots = torch.cat([torch.stack((m.image, torch.full_like(m.image, level), m.anchor, m.row, m.col), 1)
                           for level, m in enumerate(proposals)])
        if not len(slots):
            return proposals  # no targets, or none fits an anchor: nothing to assign
        slots = torch.unique(slots, dim=0)  # sorted by image first, a slot proposed twice competes once
        image, level, anchor, row, col = slots.unbind(1)
        with torch.no_grad():
            cand_boxes, cand_scores = self._decode_candidates(raw, slots)
            target_boxes = self._target_pixels(targets, batch)
            target_index, cand_index = self._assign_per_image(targets, target_boxes, image, cand_boxes,
                                                              cand_scores, len(raw[0]))
        matches = []
        for lvl, (ny, nx) in enumerate(grids):
            on_level = level[cand_index] == lvl
            cand, target = cand_index[on_level], targets[target_index[on_level]]
            size = target.new_tensor([nx, ny])
            cell = torch.stack((col[cand], row[cand]), 1).to(target.dtype)
            matches.append(Matches(
                image=image[cand], anchor=anchor[cand], row=row[cand], col=col[cand],
                box=torch.cat((target[:, 2:4] * size - cell, target[:, 4:6] * size), 1),
                cls=target[:, 1].long(), anchor_wh=anchor_wh[lvl][anchor[cand]],
            ))
        return matches

    def _decode_candidates(self, raw: list[torch.Tensor], slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates' predicted boxes (xyxy, input pixels) and class scores, in float32."""
        image, level, anchor, row, col = slots.unbind(1)
        picked = raw[0].new_empty((len(slots), raw[0].shape[-1]), dtype=torch.float32)
        for lvl, out in enumerate(raw):
            on_level = level == lvl
            picked[on_level] = out[image[on_level], anchor[on_level], row[on_level], col[on_level]].float()
        p = picked.sigmoid()
        stride = self.stride.to(picked.device)[level, None]
        anchor_pixels = self.anchor_wh.to(picked.device)[level, anchor] * stride
        xy = (p[:, :2] * 2 - 0.5 + torch.stack((col, row), 1).float()) * stride  # decode_slots' box decode
        wh = (p[:, 2:4] * 2) ** 2 * anchor_pixels
        return xywh2xyxy(torch.cat((xy, wh), 1)), (p[:, 5:] * p[:, 4:5]).sqrt()

    @staticmethod
    def _target_pixels(targets: torch.Tensor, batch: dict) -> torch.Tensor:
        """Normalised target xywh → xyxy in input pixels, x by the batch's image width and y by its height."""
        height, width = batch["img"].shape[2:4]
        return xywh2xyxy(targets[:, 2:6] * targets.new_tensor([width, height, width, height]))

    @staticmethod
    def _assign_per_image(targets: torch.Tensor, target_boxes: torch.Tensor, cand_image: torch.Tensor,
                          cand_boxes: torch.Tensor, cand_scores: torch.Tensor,
                          batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``ota_assign`` on each image's targets and candidates (candidates sorted by image); global indices."""
        target_image = targets[:, 0].long()
        target_order = target_image.argsort(stable=True)
        target_counts = torch.bincount(target_image, minlength=batch_size).tolist()
        cand_counts = torch.bincount(cand_image, minlength=batch_size).tolist()
        chosen_targets, chosen_cands = [target_image.new_zeros(0)], [target_image.new_zeros(0)]
        target_start = cand_start = 0
        for num_targets, num_cands in zip(target_counts, cand_counts):
            if num_targets and num_cands:
                own_targets = target_order[target_start:target_start + num_targets]
                cands = slice(cand_start, cand_start + num_cands)
                t, c = ota_assign(target_boxes[own_targets], targets[own_targets, 1].long(), cand_boxes[cands],
                                  cand_scores[cands])
                chosen_targets.append(own_targets[t])
                chosen_cands.append(c + cand_start)
            target_start += num_targets
            cand_start += num_cands
        return torch.cat(chosen_targets), torch.cat(chosen_cands)
