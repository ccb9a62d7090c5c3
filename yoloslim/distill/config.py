"""The distillation settings: plain data, so they pickle into DDP workers unchanged."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from torch import nn

from yoloslim.distill.losses import FEATURE_LOSSES
from yoloslim.distill.schedules import check_schedule
from yoloslim.distill.tasks import LOGIT_LOSSES, check_logit_for_task, known_task
from yoloslim.errors import UserError


@dataclass
class DistillConfig:
    """What to distil from which teacher.

    ``teacher`` is a checkpoint path or model yaml (loaded lazily, so each DDP worker loads its own)
    or an in-memory module. Layer lists default to the layers feeding each model's head.
    ``temperature`` softens the softmax of ``--feature cwd`` and of ``--logit kl`` alike.
    """

    teacher: str | Path | nn.Module
    logit: str | None = None
    feature: str | None = None
    logit_weight: float = 1.0
    feature_weight: float = 1.0
    student_layers: list[int] | None = None
    teacher_layers: list[int] | None = None
    schedule: str = "constant"
    temperature: float = 1.0
    mask_ratio: float = 0.65

    def __post_init__(self) -> None:
        teacher_task = known_task(self.teacher)  # a missing teacher fails now, not after the trainer has set up
        if self.logit is None and self.feature is None:
            raise UserError("distillation needs --logit and/or --feature — e.g. --logit l2 --feature cwd")
        if self.logit is not None and self.logit not in LOGIT_LOSSES:
            raise UserError(f"unknown --logit {self.logit!r} — choose one of {', '.join(LOGIT_LOSSES)}")
        if self.logit is not None and teacher_task is not None:  # a checkpoint's task is checked when it is loaded
            check_logit_for_task(self.logit, teacher_task)
        if self.feature is not None and self.feature not in FEATURE_LOSSES:
            raise UserError(f"unknown --feature {self.feature!r} — choose one of {', '.join(FEATURE_LOSSES)}")
        check_schedule(self.schedule)
        for name in ("logit_weight", "feature_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise UserError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        if self.student_layers is not None and self.teacher_layers is not None:
            if len(self.student_layers) != len(self.teacher_layers):
                raise UserError(
                    f"{len(self.student_layers)} student layers but {len(self.teacher_layers)} teacher layers — "
                    f"give the same number so they pair up"
                )

    def summary(self) -> dict:
        """What gets recorded in the student's yoloslim metadata (the teacher by name, never its weights)."""
        teacher = type(self.teacher).__name__ if isinstance(self.teacher, nn.Module) else str(self.teacher)
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "teacher": teacher}
