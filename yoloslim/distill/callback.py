"""Distillation as a trainer extension: one picklable object whose bound methods are callbacks.

ultralytics cloudpickles ``trainer.callbacks`` into each DDP worker, so the object carries only
its :class:`DistillConfig` across; everything heavy (teacher, hooks, connectors, their optimizer)
is built in the worker at ``on_pretrain_routine_end``, when the student, device and EMA exist.

Connectors get their own optimizer instead of a param group in the trainer's: the trainer's
scheduler and resume logic assume the groups ``build_optimizer`` made, and the student's checkpoint
must not carry them. It is stepped inside the trainer's optimizer step (after AMP unscaling,
through the same GradScaler, clipped like the model) with the learning rate of the trainer's
first group, so warmup and the LR schedule apply to it too.

Connector weights and their optimizer state go into last.pt's training state (never into the student
that best.pt and the final checkpoints hold), and a resumed run continues from them. Validation runs
the EMA without a teacher, so the distillation terms are training-only losses: results.csv has no
always-zero ``val/logit_*``/``val/feat_*`` columns.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from yoloslim.distill.config import DistillConfig
from yoloslim.distill.criterion import DistillCriterion, build_distillation
from yoloslim.distill.schedules import schedule_factor
from yoloslim.engine.checkpoint import record_meta
from yoloslim.engine.trainer import BEFORE_OPTIMIZER_STEP, SAVE_TRAINING_STATE
from yoloslim.errors import UserError
from yoloslim.report.metrics import count_params

STATE = "distill"  # key in last.pt's training state


def load_teacher(teacher: str | Path | nn.Module, trainer) -> nn.Module:
    """The teacher module: as given, from a checkpoint, or built from a yaml for the run's classes.

    The trainer builds a yaml as a model of its own task whatever the yaml's head, so a yaml of another
    task is refused first.
    """
    from ultralytics.utils.torch_utils import unwrap_model

    from yoloslim.distill.tasks import check_same_task
    from yoloslim.models import load_module
    from yoloslim.models.load import resolve_spec

    if isinstance(teacher, nn.Module):
        return teacher
    target, is_checkpoint = resolve_spec(str(teacher))
    if is_checkpoint:
        return load_module(target)
    check_same_task(unwrap_model(trainer.model), target)
    from ultralytics.utils import LOGGER

    LOGGER.warning(f"distill: teacher {teacher} is built from a yaml with random weights — pass a trained .pt")
    return trainer.get_model(cfg=target, verbose=False)


def companion_optimizer(main: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer of the trainer's kind and settings (SGD when that kind is not a stock torch optimizer)."""
    cls = type(main) if type(main).__module__.startswith("torch.optim") else torch.optim.SGD
    accepted = inspect.signature(cls).parameters
    settings = {k: v for k, v in main.param_groups[0].items() if k in accepted and k != "params"}
    return cls(params, **settings)


class Distiller:
    """Register :meth:`callbacks` with a yoloslim trainer (``train(..., callbacks=distiller.callbacks())``)."""

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.criterion: DistillCriterion | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._student: nn.Module | None = None
        self._batch_in_epoch = 0

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def callbacks(self) -> list[tuple[str, object]]:
        return [
            ("on_pretrain_routine_end", self.setup),
            ("on_train_epoch_start", self.start_epoch),
            ("on_train_batch_start", self.set_weight),
            (BEFORE_OPTIMIZER_STEP, self.step_connectors),
            (SAVE_TRAINING_STATE, self.save_state),
            ("on_train_end", self.close),
        ]

    def setup(self, trainer) -> None:
        from ultralytics.utils import LOGGER
        from ultralytics.utils.torch_utils import unwrap_model

        student = unwrap_model(trainer.model)
        teacher = load_teacher(self.config.teacher, trainer)
        self.criterion = build_distillation(student, teacher, self.config, trainer.args.imgsz, trainer.device)
        student.criterion = self.criterion
        self._student = student
        params = list(self.criterion.trainable_parameters())
        self.optimizer = companion_optimizer(trainer.optimizer, params) if params else None
        trainer.train_only_losses = frozenset(self.criterion.names)
        saved = (getattr(trainer, "resumed_state", None) or {}).get(STATE)
        if saved:
            self.load_state(saved)
        summary = {
            **self.config.summary(),
            "student_layers": self.criterion.student_recorder.layers or None,
            "teacher_layers": self.criterion.teacher_recorder.layers or None,
        }
        for model in (student, trainer.ema.ema if trainer.ema else None):
            if model is not None:
                record_meta(model, distill=summary)
        n_connector = sum(p.numel() for p in params)
        LOGGER.info(
            f"distill: teacher {summary['teacher']} ({count_params(teacher):,} "
            f"params), terms {', '.join(self.criterion.names)}, schedule {self.config.schedule}, "
            f"{n_connector:,} connector params (trained; kept in last.pt for resuming, never in the student)"
        )

    def state(self) -> dict:
        """Connector (and loss-owned module) weights and their optimizer state."""
        return {"modules": self.criterion.trainable_modules().state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def save_state(self, trainer) -> None:
        if self.criterion is not None:
            trainer.training_state[STATE] = self.state()

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state` of the interrupted run."""
        try:
            self.criterion.trainable_modules().load_state_dict(state["modules"])
        except RuntimeError:
            raise UserError("the run's saved distillation connectors do not fit the current settings — resume "
                            "without changing --teacher, --feature or the layers") from None
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def start_epoch(self, trainer) -> None:
        self._batch_in_epoch = 0

    def set_weight(self, trainer) -> None:
        """Apply the schedule at this iteration's position in the run."""
        batches = max(len(trainer.train_loader), 1)
        progress = (trainer.epoch + self._batch_in_epoch / batches) / max(trainer.epochs, 1)
        self.criterion.factor = schedule_factor(self.config.schedule, progress)
        self._batch_in_epoch += 1

    def step_connectors(self, trainer) -> None:
        if self.optimizer is None:
            return
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        trainer.scaler.unscale_(self.optimizer)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
        if trainer.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_norm=trainer.clip_grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = trainer.optimizer.param_groups[0]["lr"]
        trainer.scaler.step(self.optimizer)
        self.optimizer.zero_grad()

    def close(self, trainer=None) -> None:
        """Give the student its plain loss back and free the teacher (safe to call twice)."""
        if self.criterion is not None:
            self.criterion.close()
            if self._student is not None and self._student.criterion is self.criterion:
                self._student.criterion = None
        self.criterion = self.optimizer = self._student = None


def distill_callbacks(config: DistillConfig) -> list[tuple[str, object]]:
    """The callbacks to pass to :func:`yoloslim.engine.train.train` to distil from ``config.teacher``."""
    return Distiller(config).callbacks()
