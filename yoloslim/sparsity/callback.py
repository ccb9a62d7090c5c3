"""The trainer extension that applies the sparsity penalty and reports γ statistics.

It is one picklable object whose methods are registered as ultralytics callbacks; ultralytics
cloudpickles ``trainer.callbacks`` into DDP workers, so the settings (method, sr, schedule, the
selected BNs) reach every rank. The penalty itself runs on yoloslim's
``on_before_optimizer_step`` event — after ``scaler.unscale_()``, before clipping, once per
optimizer step — so it acts on true gradients whatever the loss scale or accumulation, and under
DDP every rank adds the same penalty to the same all-reduced gradients.
Its state (the penalty's own, e.g. group_reg's growth, the step count and the γ history) is saved in
last.pt and restored when the run resumes, so a resumed run continues the penalty and the plot.
Every epoch's verdict (:mod:`yoloslim.sparsity.verdict`) goes to results.csv and into the EMA model's
yoloslim record, so each saved checkpoint carries the verdict on its own γ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from yoloslim.engine.checkpoint import model_meta, record_meta
from yoloslim.engine.trainer import BEFORE_OPTIMIZER_STEP, OPTIMIZER_BUILT, SAVE_TRAINING_STATE, KeepModelMixin
from yoloslim.errors import UserError
from yoloslim.sparsity.gamma_lr import split_gamma_group
from yoloslim.sparsity.optimizer_advice import sparse_optimizer_warning
from yoloslim.sparsity.penalties import Penalty
from yoloslim.sparsity.plots import plot_gamma_history
from yoloslim.sparsity.schedule import check_schedule, sr_at
from yoloslim.sparsity.stats import abs_gammas, describe_stats, gamma_stats
from yoloslim.sparsity.verdict import judge, layer_tops

PLOT_NAME = "bn_gamma.png"
STATE = "sparse"  # key in last.pt's training state


class SparseTraining:
    """Register with :meth:`events`; calling the object applies one step of the penalty."""

    def __init__(self, penalty: Penalty, sr: float, schedule: str = "linear", clip: float | None = None,
                 shortcut: str = "skip", gamma_lr_scale: float = 1.0) -> None:
        self.penalty = penalty
        self.gamma_lr_scale = gamma_lr_scale
        self.sr = sr
        self.schedule = check_schedule(schedule)
        self.clip = clip
        self.shortcut = shortcut  # the --shortcut whose channel pool the verdict judges
        self.steps = 0
        self.history: list[tuple[int, np.ndarray]] = []
        self._batches = 0

    def events(self) -> list[tuple[str, Callable[[Any], None]]]:
        return [
            (OPTIMIZER_BUILT, self.on_optimizer_built),
            ("on_train_start", self.on_train_start),
            ("on_train_epoch_start", self.on_train_epoch_start),
            ("on_train_batch_start", self.on_train_batch_start),
            (BEFORE_OPTIMIZER_STEP, self),
            ("on_train_epoch_end", self.on_train_epoch_end),
            ("on_fit_epoch_end", self.on_fit_epoch_end),
            (SAVE_TRAINING_STATE, self.save_state),
        ]

    def on_train_start(self, trainer) -> None:
        """Runs on every rank (unlike on_pretrain_routine_start), after the model is on its device."""
        if not isinstance(trainer, KeepModelMixin):
            raise TypeError(f"sparse training needs a yoloslim trainer (it fires {BEFORE_OPTIMIZER_STEP}), "
                            f"got {type(trainer).__name__}")
        trainer.clip_grad_norm = self.clip
        self.penalty.bind(trainer.model)
        saved = (getattr(trainer, "resumed_state", None) or {}).get(STATE)
        if saved:
            self.load_state(saved)
        warning = sparse_optimizer_warning(trainer)
        if warning and RANK in {-1, 0}:
            LOGGER.warning(warning)

    def on_optimizer_built(self, trainer) -> None:
        if self.gamma_lr_scale == 1.0:
            return
        moved = split_gamma_group(trainer.optimizer, trainer.model, self.penalty.selection.gamma_params,
                                  self.gamma_lr_scale)
        if RANK in {-1, 0}:
            LOGGER.info(f"sparse: the {moved} penalized γ learn at {self.gamma_lr_scale:g} x the lr of the other BN "
                        f"weights")

    def state(self) -> dict[str, Any]:
        return {"method": self.penalty.name, "steps": self.steps, "penalty": self.penalty.state_dict(),
                "history": [(epoch, torch.from_numpy(values)) for epoch, values in self.history]}

    def save_state(self, trainer) -> None:
        trainer.training_state[STATE] = self.state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of the interrupted run (after the penalty is bound)."""
        if state["method"] != self.penalty.name:
            raise UserError(f"the run was sparse-trained with --method {state['method']}, not {self.penalty.name} "
                            f"— resume it without changing --method")
        self.penalty.load_state_dict(state["penalty"])
        self.steps = int(state["steps"])
        self.history = [(int(epoch), values.numpy()) for epoch, values in state["history"]]

    def on_train_epoch_start(self, trainer) -> None:
        self._batches = 0

    def on_train_batch_start(self, trainer) -> None:
        self._batches += 1

    def progress(self, trainer) -> float:
        """Fraction of the run done when the current batch began (smooth across the epoch)."""
        batches_per_epoch = max(len(trainer.train_loader), 1)
        return (trainer.epoch + (self._batches - 1) / batches_per_epoch) / max(trainer.epochs, 1)

    def current_sr(self, trainer) -> float:
        return sr_at(self.sr, self.schedule, self.progress(trainer))

    def __call__(self, trainer) -> None:
        self.penalty.apply(self.current_sr(trainer))
        self.steps += 1

    def on_train_epoch_end(self, trainer) -> None:
        self.penalty.on_epoch_end()
        if RANK not in {-1, 0}:
            return
        model = trainer.ema.ema if getattr(trainer, "ema", None) else unwrap_model(trainer.model)
        selection = self.penalty.selection
        values = abs_gammas(model, selection.penalized)
        stats = gamma_stats(values)
        verdict = judge(values, layer_tops(model, selection), self.shortcut)
        record_meta(model, sparse={**model_meta(model).get("sparse", {}), "verdict": verdict.as_record()})
        self.history.append((trainer.epoch + 1, values.numpy()))
        trainer.extra_metrics = {**(trainer.extra_metrics or {}), **stats, **verdict.columns()}
        LOGGER.info(f"sparse ({self.penalty.name}, sr now {self.current_sr(trainer):.3g}): {describe_stats(stats)}; "
                    f"{verdict.describe()}")

    def on_fit_epoch_end(self, trainer) -> None:
        if RANK in {-1, 0} and self.history:
            plot_gamma_history(self.history, Path(trainer.save_dir) / PLOT_NAME)
