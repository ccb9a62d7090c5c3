"""``distill()``: train a student with a teacher from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from torch import nn

from yoloslim.distill.callback import Distiller
from yoloslim.distill.config import DistillConfig
from yoloslim.engine.train import Callback, TrainResult, run_dir, train


def distill(
    model: str | nn.Module,
    data: str | Path,
    teacher: str | Path | nn.Module,
    *,
    logit: str | None = None,
    feature: str | None = None,
    logit_weight: float = 1.0,
    feature_weight: float = 1.0,
    layers: list[int] | None = None,
    student_layers: list[int] | None = None,
    teacher_layers: list[int] | None = None,
    schedule: str = "constant",
    temperature: float = 1.0,
    mask_ratio: float = 0.65,
    project: str | Path | None = None,
    name: str = "distill",
    callbacks: Iterable[Callback] = (),
    **train_args: Any,
) -> TrainResult:
    """Train ``model`` (yaml, checkpoint or module — a pruned student stays pruned) with ``teacher``'s guidance.

    ``logit`` is ``l1``/``l2``/``ast`` for box heads (detect, segment, pose, obb) or ``kl`` for classifiers,
    ``feature`` is ``mimic``/``mgd``/``cwd``; either or both (``distill.tasks`` says what applies where).
    The teacher must solve the student's task.
    ``layers`` sets the student and teacher layers together. ``train_args`` go to
    :func:`yoloslim.engine.train.train` (epochs, imgsz, batch, device, ...). The saved checkpoints
    hold the student only.
    """
    config = DistillConfig(
        teacher=teacher,
        logit=logit,
        feature=feature,
        logit_weight=logit_weight,
        feature_weight=feature_weight,
        student_layers=student_layers or layers,
        teacher_layers=teacher_layers or layers,
        schedule=schedule,
        temperature=temperature,
        mask_ratio=mask_ratio,
    )
    distiller = Distiller(config)
    try:
        return train(model, data, project=run_dir(project, "distill"), name=name,
                     callbacks=[*callbacks, *distiller.callbacks()], **train_args)
    finally:
        distiller.close()
