"""The training loss with a teacher: the student's own task loss plus distillation terms.

It replaces the student's ``criterion`` for the run, so it sees exactly the augmented batch the
student was trained on, and it returns the ultralytics loss contract — a loss vector plus a dict of
named items — with one extra entry per distillation component. The trainer derives its loss names,
progress-bar columns and results.csv columns from that dict, so ``logit_l2``/``feat_cwd`` appear
beside box/cls/dfl (or a classifier's ``loss``) without any trainer change. Which terms a task
takes, and how its own loss is scaled, is ``tasks.py``'s business; nothing here assumes a head.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from yoloslim.distill.config import DistillConfig
from yoloslim.distill.connectors import build_connectors
from yoloslim.distill.heads import training_outputs
from yoloslim.distill.losses import FeatureLoss, LogitLoss, build_feature_loss
from yoloslim.distill.recorders import OutputRecorder, check_layers, head_input_layers
from yoloslim.distill.tasks import build_logit_term, check_same_task, loss_scale
from yoloslim.errors import UserError


def _as_plain(task_loss):
    """What a copy of a DistillCriterion becomes (see ``DistillCriterion.__reduce__``)."""
    return task_loss


class DistillCriterion:
    """The student's task loss + weighted distillation terms; ``factor`` is the schedule's current multiplier."""

    def __init__(
        self,
        task_loss,
        task: str,
        teacher: nn.Module,
        student_recorder: OutputRecorder,
        teacher_recorder: OutputRecorder,
        connectors: nn.ModuleList,
        feature_loss: FeatureLoss | None,
        logit_loss: LogitLoss | None,
        config: DistillConfig,
    ) -> None:
        self.task_loss = task_loss
        self.task = task
        self.teacher = teacher
        self.student_recorder = student_recorder
        self.teacher_recorder = teacher_recorder
        self.connectors = connectors
        self.feature_loss = feature_loss
        self.logit_loss = logit_loss
        self.config = config
        self.factor = 1.0
        self.names = [
            name
            for name, loss in ((f"logit_{config.logit}", logit_loss), (f"feat_{config.feature}", feature_loss))
            if loss is not None
        ]

    def __reduce__(self):
        """Copies of the student (EMA, checkpoints, DDP pickling) get the plain task loss, never the teacher."""
        return _as_plain, (self.task_loss,)

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, items = self.task_loss(preds, batch)
        # Every head's eval-mode forward returns a tuple (decoded output, raw output) — a classifier's is
        # (probabilities, logits) — while train mode returns the raw output alone: a dict, a list or logits.
        if isinstance(preds, tuple):  # eval mode (validation): distillation is a training signal only
            terms = [torch.zeros((), device=loss.device) for _ in self.names]
        else:
            terms = self.distillation_terms(preds, batch)
        for name, term in zip(self.names, terms):
            items[name] = term.detach()
        scale = loss_scale(self.task, batch["img"].shape[0])
        return torch.cat([loss.reshape(-1), torch.stack(terms).to(loss.dtype) * scale]), items

    def distillation_terms(self, preds, batch: dict) -> list[torch.Tensor]:
        """Weighted terms in ``self.names`` order; the teacher's activations are released before returning."""
        try:
            with torch.no_grad():
                teacher_preds = self.teacher(batch["img"])
            terms = []
            if self.logit_loss is not None:
                raw = self.logit_loss(training_outputs(preds), training_outputs(teacher_preds), batch)
                terms.append(raw * self.config.logit_weight * self.factor)
            if self.feature_loss is not None:
                aligned = [c(f) for c, f in zip(self.connectors, self.student_recorder.recorded())]
                raw = self.feature_loss(aligned, self.teacher_recorder.recorded())
                terms.append(raw * self.config.feature_weight * self.factor)
            return terms
        finally:
            self.student_recorder.clear()
            self.teacher_recorder.clear()

    def trainable_modules(self) -> nn.ModuleList:
        """Connectors and loss-owned modules (MGD generators): trained with the student, never saved in it."""
        return nn.ModuleList(m for m in (self.connectors, self.feature_loss) if m is not None)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.trainable_modules().parameters() if p.requires_grad)

    def update(self) -> None:
        """Forwarded end-of-epoch hook (ultralytics calls ``criterion.update()`` when it exists)."""
        if hasattr(self.task_loss, "update"):
            self.task_loss.update()

    def close(self) -> None:
        """Remove the hooks and drop the teacher so nothing outlives the run."""
        self.student_recorder.remove()
        self.teacher_recorder.remove()
        self.teacher = None


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def _probe_shapes(model: nn.Module, recorder: OutputRecorder, imgsz: int, device: torch.device) -> list[torch.Size]:
    """Output shapes of the recorded layers for one blank image (eval mode, so BN statistics stay untouched)."""
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, imgsz, imgsz, device=device))
        shapes = [t.shape for t in recorder.recorded()]
    finally:
        recorder.clear()
        model.train(was_training)
    if any(len(s) != 4 for s in shapes):
        raise UserError(
            f"layers {recorder.layers} must output feature maps (N, C, H, W), got {[tuple(s) for s in shapes]} — "
            f"choose other --layers"
        )
    return shapes


def _feature_matching(
    student: nn.Module,
    teacher: nn.Module,
    student_recorder: OutputRecorder,
    teacher_recorder: OutputRecorder,
    config: DistillConfig,
    imgsz: int,
    device: torch.device,
) -> tuple[nn.ModuleList, FeatureLoss | None]:
    """Connectors and feature loss sized from one probe forward; layers must pair at equal resolution."""
    if not config.feature:
        return nn.ModuleList(), None
    s_shapes = _probe_shapes(student, student_recorder, imgsz, device)
    t_shapes = _probe_shapes(teacher, teacher_recorder, imgsz, device)
    for si, ti, s, t in zip(student_recorder.layers, teacher_recorder.layers, s_shapes, t_shapes):
        if s[2:] != t[2:]:
            raise UserError(
                f"student layer {si} gives {s[2]}x{s[3]} maps but teacher layer {ti} gives {t[2]}x{t[3]} — "
                f"pair layers of the same stride (--student-layers / --teacher-layers)"
            )
    teacher_channels = [t[1] for t in t_shapes]
    connectors = build_connectors([s[1] for s in s_shapes], teacher_channels).to(device)
    feature_loss = build_feature_loss(config.feature, teacher_channels, config.temperature, config.mask_ratio)
    return connectors, feature_loss.to(device)


def build_distillation(
    student: nn.Module, teacher: nn.Module, config: DistillConfig, imgsz: int, device: torch.device | str = "cpu"
) -> DistillCriterion:
    """Wire a frozen ``teacher`` of the student's task to ``student``: hooks, connectors, losses. Install with
    ``student.criterion = ...``."""
    from yoloslim.models.load import is_rtdetr_module

    if is_rtdetr_module(student):
        raise UserError("distillation supports YOLO students; RT-DETR's loss has another interface — "
                        "train RT-DETR without --teacher")
    task = check_same_task(student, teacher)
    device = torch.device(device)
    teacher = freeze_teacher(teacher.to(device).float())
    logit_loss = build_logit_term(config.logit, task, student, teacher, config.temperature) if config.logit else None
    student_layers = check_layers(student, config.student_layers or head_input_layers(student), "student")
    teacher_layers = check_layers(
        teacher, config.teacher_layers or config.student_layers or head_input_layers(teacher), "teacher"
    )
    if len(student_layers) != len(teacher_layers):
        raise UserError(
            f"student layers {student_layers} and teacher layers {teacher_layers} differ in number — "
            f"pass --student-layers and --teacher-layers with one teacher layer per student layer"
        )
    student_recorder = OutputRecorder(student, student_layers if config.feature else [])
    teacher_recorder = OutputRecorder(teacher, teacher_layers if config.feature else [])
    try:
        connectors, feature_loss = _feature_matching(
            student, teacher, student_recorder, teacher_recorder, config, imgsz, device
        )
    except BaseException:
        student_recorder.remove()
        teacher_recorder.remove()
        raise
    return DistillCriterion(
        student.init_criterion(), task, teacher, student_recorder, teacher_recorder, connectors, feature_loss,
        logit_loss, config,
    )
