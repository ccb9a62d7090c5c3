"""Logit distillation between classifiers: the teacher's softened class distribution as the target.

A Classify head gives one logit vector per image, so there are no anchors to match and no boxes to
weigh: the classic knowledge-distillation term applies (Hinton, Vinyals, Dean, "Distilling the Knowledge
in a Neural Network", 2015). Dividing both logit vectors by a temperature T > 1 softens the softmax, so
the teacher's ranking of the wrong classes ("dark knowledge") carries weight; the KL divergence between
the softened distributions is multiplied by T², because its gradients shrink like 1/T² and the term
should keep its weight against the cross-entropy when T changes. The per-anchor losses l1/l2/ast have no
counterpart here (see ``tasks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from yoloslim.distill.losses import LogitLoss
from yoloslim.errors import UserError

CLASS_LOGIT_LOSSES = ("kl",)


@dataclass(frozen=True)
class ClassifierLayout:
    nc: int


def classifier_layout(model: nn.Module, role: str) -> ClassifierLayout:
    from yoloslim.engine.trainer import head_nc

    nc = head_nc(model)
    if nc is None:
        raise UserError(f"cannot read the {role}'s class count from its head ({type(model.model[-1]).__name__}) — "
                        f"distil features only (--feature without --logit)")
    return ClassifierLayout(int(nc))


def check_classifiers_compatible(student: nn.Module, teacher: nn.Module) -> ClassifierLayout:
    """Fail with one line unless both classifiers predict the same number of classes (logit i = class i)."""
    s, t = classifier_layout(student, "student"), classifier_layout(teacher, "teacher")
    if s != t:
        raise UserError(f"logit distillation needs the same classes, but the student ({type(student).__name__}) "
                        f"predicts {s.nc} and the teacher ({type(teacher).__name__}) {t.nc} — use a teacher trained "
                        f"on the same classes or distil features only (--feature without --logit)")
    return s


class SoftenedKLDivergence(LogitLoss):
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the images of the batch."""

    def __init__(self, layout: ClassifierLayout, temperature: float) -> None:
        super().__init__(layout)
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict) -> torch.Tensor:
        t = self.temperature
        log_p_student = F.log_softmax(student.float() / t, dim=1)
        log_p_teacher = F.log_softmax(teacher.detach().float() / t, dim=1)
        return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t**2


def build_class_logit_loss(name: str, layout: ClassifierLayout, temperature: float) -> LogitLoss:
    if name == "kl":
        return SoftenedKLDivergence(layout, temperature)
    raise UserError(f"unknown logit loss {name!r} for a classifier — choose one of {', '.join(CLASS_LOGIT_LOSSES)}")
