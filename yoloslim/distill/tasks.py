"""Which distillation terms apply to which task, and the checks that pair a student with its teacher.

ultralytics' five tasks share backbones and necks and differ in their heads, so feature terms apply
to all of them alike while logit terms follow the head:

============  =====================  ===============================  ================================================
task          head                   --feature mimic / mgd / cwd      --logit
============  =====================  ===============================  ================================================
detect        Detect                 layers feeding the head          l1, l2, ast: per-anchor class scores and box
                                                                      distributions (l1/l2 on the teacher's foreground)
detect        AnchorDetect (v5/v7)   layers feeding the head          l1, l2, ast: as above, plus objectness
segment       Segment                layers feeding the head          l1, l2, ast on the box/class outputs; mask
                                                                      coefficients and prototypes are not distilled
pose          Pose                   layers feeding the head          l1, l2, ast on the box/class outputs; keypoints
                                                                      are not distilled
obb           OBB                    layers feeding the head          l1, l2, ast on the box/class outputs, matched
                                                                      with the rotated assigner, ast weighted by
                                                                      ProbIoU; angles are not distilled
classify      Classify               the one layer feeding the head   kl: T² · KL of temperature-softened class
                                                                      distributions (``--temperature``)
============  =====================  ===============================  ================================================

The box/class outputs are the part every box head shares, so one set of terms serves four tasks;
mask coefficients mean nothing outside their own model's prototypes, and keypoints and angles are
taught by the task loss from the labels. A classifier has no anchors, boxes or IoU for l1/l2/ast to
work on, and a box head no single class distribution for kl to soften, so a name outside a task's
column is refused in one line rather than given a second meaning.

Teacher and student must solve the same task (checked before anything is built), and logit terms
need heads that agree output by output: the same strides, classes and DFL bins for box heads, the
same anchors for anchor heads, the same class count for classifiers. Feature terms need neither:
a classifier pretrained on other classes can still teach features.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from yoloslim.distill.class_logits import CLASS_LOGIT_LOSSES
from yoloslim.distill.losses import BOX_LOGIT_LOSSES, LogitLoss
from yoloslim.errors import UserError

LOGIT_LOSSES = BOX_LOGIT_LOSSES + CLASS_LOGIT_LOSSES
LOGIT_LOSSES_BY_TASK = {"detect": BOX_LOGIT_LOSSES, "segment": BOX_LOGIT_LOSSES, "pose": BOX_LOGIT_LOSSES,
                        "obb": BOX_LOGIT_LOSSES, "classify": CLASS_LOGIT_LOSSES}


def _describe(model: nn.Module | str | Path) -> str:
    return type(model).__name__ if isinstance(model, nn.Module) else Path(str(model)).name


def check_same_task(student: nn.Module, teacher: nn.Module | str | Path) -> str:
    """The task student and teacher both solve; one line naming both when they differ (a teacher may be a yaml)."""
    from yoloslim.engine.tasks import task_of

    s, t = task_of(student), task_of(teacher)
    if s != t:
        raise UserError(f"the student is a {s} model ({_describe(student)}) but the teacher a {t} model "
                        f"({_describe(teacher)}) — distil from a teacher trained for the same task")
    return s


def known_task(teacher: nn.Module | str | Path) -> str | None:
    """A teacher's task when it is known without loading weights: a module's or a yaml's; None for a checkpoint."""
    from yoloslim.engine.tasks import task_of
    from yoloslim.models.load import resolve_spec

    if isinstance(teacher, nn.Module):
        return task_of(teacher)
    target, is_checkpoint = resolve_spec(str(teacher))
    return None if is_checkpoint else task_of(target)


def check_logit_for_task(name: str, task: str) -> str:
    """``name`` when it is a logit term of ``task`` (see the table above), else one line saying which are."""
    allowed = LOGIT_LOSSES_BY_TASK[task]
    if name not in allowed:
        hint = ""
        if name in LOGIT_LOSSES:
            hint = " (l1, l2 and ast compare box heads anchor by anchor)" if task == "classify" else \
                " (kl is for classifiers)"
        choice = allowed[0] if len(allowed) == 1 else f"one of {', '.join(allowed)}"
        raise UserError(f"unknown --logit {name!r} for {task} models — choose {choice}{hint}")
    return name


def build_logit_term(name: str, task: str, student: nn.Module, teacher: nn.Module, temperature: float) -> LogitLoss:
    """The logit loss ``name`` for two heads of ``task``, once they are checked to agree output by output."""
    check_logit_for_task(name, task)
    if task == "classify":
        from yoloslim.distill.class_logits import build_class_logit_loss, check_classifiers_compatible

        return build_class_logit_loss(name, check_classifiers_compatible(student, teacher), temperature)
    from yoloslim.distill.anchor_logits import AnchorHeadLayout, build_anchor_logit_loss
    from yoloslim.distill.heads import check_heads_compatible
    from yoloslim.distill.losses import build_logit_loss

    layout = check_heads_compatible(student, teacher)
    build = build_anchor_logit_loss if isinstance(layout, AnchorHeadLayout) else build_logit_loss
    return build(name, layout)


def loss_scale(task: str, batch_size: int) -> int:
    """The factor the student's own loss applies to its logged items, which the distillation terms take too.

    ultralytics' box-head losses return their per-image items times the batch size; the classification
    loss is the plain batch mean. Matching it keeps ``--logit-weight``/``--feature-weight`` relative to the
    task loss the same in every task.
    """
    return 1 if task == "classify" else batch_size
