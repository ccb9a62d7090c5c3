"""Distillation losses. Each returns an unweighted scalar; the caller applies weight and schedule.

Feature losses compare the student's connector-aligned features with the teacher's at matched
layers and average over layers. The logit losses here compare two anchor-free box heads (Detect, and
the box/class part of Segment, Pose and OBB) anchor by anchor; anchor-based heads have theirs in
``anchor_logits.py``, classifiers theirs in ``class_logits.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from yoloslim.distill.heads import HeadLayout, box_distribution, box_overlap, decode_boxes, teacher_foreground
from yoloslim.errors import UserError


class FeatureLoss(nn.Module):
    """Mean over matched layers of a per-layer loss between aligned student and teacher features."""

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        pairs = enumerate(zip(student, teacher))
        return torch.stack([self.layer_loss(i, s.float(), t.detach().float()) for i, (s, t) in pairs]).mean()

    def layer_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MimicLoss(FeatureLoss):
    """Mimic: mean squared error between features (Li, Jin, Yan, "Mimicking Very Efficient Networks for
    Object Detection", CVPR 2017)."""

    def layer_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(student, teacher)


class CWDLoss(FeatureLoss):
    """Channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction",
    ICCV 2021): each channel becomes a distribution over spatial positions (softmax of value/τ); the
    loss is KL(teacher ‖ student) summed over positions, averaged over channels and images, times τ².
    Matching where each channel fires, not its magnitude, suits features of different scale."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def layer_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        n, c = student.shape[:2]
        tau = self.temperature
        log_p_student = F.log_softmax(student.reshape(n * c, -1) / tau, dim=1)
        log_p_teacher = F.log_softmax(teacher.reshape(n * c, -1) / tau, dim=1)
        kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()
        return kl * tau**2 / (n * c)


class MGDLoss(FeatureLoss):
    """Masked generative distillation (Yang et al., "Masked Generative Distillation", ECCV 2022): zero a
    random fraction λ of the aligned student feature's positions (the same for all channels), let a
    conv3x3-ReLU-conv3x3 generator rebuild the full teacher feature from what is left, and penalise the
    squared error. The paper's α is ``--feature-weight``; the error is a per-element mean here (the paper
    sums), so useful weights are larger than the paper's 2e-5. The generators train with the connectors."""

    def __init__(self, teacher_channels: Sequence[int], mask_ratio: float = 0.65) -> None:
        super().__init__()
        self.mask_ratio = mask_ratio
        self.generators = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1))
            for c in teacher_channels
        )

    def layer_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        n, _, h, w = student.shape
        keep = (torch.rand(n, 1, h, w, device=student.device) >= self.mask_ratio).to(student.dtype)
        generated = self.generators[index](student * keep)
        return F.mse_loss(generated.float(), teacher)


class LogitLoss(nn.Module):
    """Compares student and teacher head outputs (:func:`heads.training_outputs` of each) on one batch.

    ``layout`` is what the two heads were checked to share; the box-head losses here take the dicts with
    ``boxes``, ``scores``, ``feats`` (and an OBB head's ``angle``) anchor-free heads produce.
    """

    def __init__(self, layout: object) -> None:
        super().__init__()
        self.layout = layout

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        raise NotImplementedError


class MatchedLogitDistance(LogitLoss):
    """Logit L1/L2: on the teacher's foreground anchors (see :func:`heads.teacher_foreground`), the p-norm
    distance between class probabilities (sigmoid) plus between box distributions (softmax over each
    side's DFL bins), summed over channels and averaged over matched anchors. Regression onto the
    teacher's outputs (Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014), restricted
    to the anchors where a dense detector's outputs carry object knowledge."""

    def __init__(self, layout: HeadLayout, p: int) -> None:
        super().__init__(layout)
        self.p = p

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        matched = teacher_foreground(teacher, batch, self.layout)
        diff_cls = student["scores"].float().sigmoid() - teacher["scores"].detach().float().sigmoid()
        diff_box = box_distribution(student["boxes"], self.layout.reg_max) - box_distribution(
            teacher["boxes"].detach(), self.layout.reg_max
        )
        per_anchor = diff_cls.abs().pow(self.p).sum(1) + diff_box.abs().pow(self.p).flatten(2).sum(2)
        return (per_anchor * matched).sum() / matched.sum().clamp(min=1)


class AlignSoftTargetLoss(LogitLoss):
    """AlignSoftTarget, after BCKD (Yang et al., "Bridging Cross-task Protocol Inconsistency for
    Distillation in Dense Object Detection", ICCV 2023): every class is a binary problem, so the
    teacher's sigmoid scores are soft binary targets for the student's BCE — written as binary KL
    (BCE minus the target's entropy: same gradient, zero when student equals teacher). Each anchor is
    weighted by the IoU of the student's and teacher's decoded boxes (ProbIoU of rotated ones), so
    classification is taught where the two already localise the same object; the loss is the weighted
    mean over anchors."""

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        s_logits = student["scores"].float()
        t_logits = teacher["scores"].detach().float()
        target = t_logits.sigmoid()
        binary_kl = F.binary_cross_entropy_with_logits(s_logits, target, reduction="none") - (
            F.binary_cross_entropy_with_logits(t_logits, target, reduction="none")
        )
        with torch.no_grad():
            weight = box_overlap(decode_boxes(student, self.layout), decode_boxes(teacher, self.layout), self.layout)
        return (binary_kl.sum(1) * weight).sum() / weight.sum().clamp(min=1)


FEATURE_LOSSES = ("mimic", "mgd", "cwd")
BOX_LOGIT_LOSSES = ("l1", "l2", "ast")  # per-anchor box-head terms; every --logit name: tasks.LOGIT_LOSSES


def build_feature_loss(
    name: str, teacher_channels: Sequence[int], temperature: float, mask_ratio: float
) -> FeatureLoss:
    if name == "mimic":
        return MimicLoss()
    if name == "cwd":
        return CWDLoss(temperature)
    if name == "mgd":
        return MGDLoss(teacher_channels, mask_ratio)
    raise UserError(f"unknown feature loss {name!r} — choose one of {', '.join(FEATURE_LOSSES)}")


def build_logit_loss(name: str, layout: HeadLayout) -> LogitLoss:
    if name in {"l1", "l2"}:
        return MatchedLogitDistance(layout, p=int(name[1]))
    if name == "ast":
        return AlignSoftTargetLoss(layout)
    raise UserError(f"unknown logit loss {name!r} for a box head — choose one of {', '.join(BOX_LOGIT_LOSSES)}")
