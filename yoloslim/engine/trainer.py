"""Trainer subclasses that keep a given (possibly pruned) model and write safe checkpoints.

Stock ultralytics rebuilds a model from its yaml when handed a checkpoint path, which silently
restores the unpruned architecture, and writes fp16 checkpoints non-atomically. These
subclasses use the pickled module as it is, save fp32 checkpoints atomically, add one event,
``on_before_optimizer_step``, fired after gradients are unscaled and before clipping, and let
extensions add results.csv columns through ``trainer.extra_metrics``.
Extensions (sparse training, distillation) are callback objects: ultralytics pickles callbacks
into DDP workers, so their settings survive the re-spawn.
"""

from __future__ import annotations

import io
from copy import deepcopy
from datetime import datetime, timezone

import torch
from torch import nn
from ultralytics.models.rtdetr.train import RTDETRTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOCAL_RANK, LOGGER, RANK, __version__
from ultralytics.utils.torch_utils import torch_distributed_zero_first, unwrap_model

from yoloslim.engine.checkpoint import (
    atomic_write_bytes,
    checkpoint_module,
    read_checkpoint,
    save_model_checkpoint,
)
from yoloslim.errors import UserError

BEFORE_OPTIMIZER_STEP = "on_before_optimizer_step"


def head_nc(model: nn.Module) -> int | None:
    head = unwrap_model(model).model[-1]
    return getattr(head, "nc", None)


class KeepModelMixin:
    """Shared behaviour of yoloslim's trainers; mixed in before the ultralytics trainer class."""

    clip_grad_norm: float | None = 10.0
    extra_metrics: dict[str, float] | None = None  # extensions' per-epoch columns for results.csv

    def save_metrics(self, metrics: dict) -> None:
        super().save_metrics({**metrics, **(self.extra_metrics or {})})

    def setup_model(self):
        ckpt = None
        if not isinstance(self.model, nn.Module):
            if not str(self.model).endswith(".pt"):
                return super().setup_model()
            ckpt = read_checkpoint(self.model)  # resume, or a trainer built from a checkpoint path
            self.model = checkpoint_module(ckpt)
        for p in self.model.parameters():  # saved frozen; enabling here spares ultralytics' per-layer warnings
            p.requires_grad_(True)
        self._check_head_matches_data(self.model)
        return ckpt

    def _check_head_matches_data(self, model: nn.Module) -> None:
        nc = head_nc(model)
        if nc is not None and nc != self.data["nc"]:
            raise UserError(
                f"the model predicts {nc} classes but the dataset {self.args.data} has {self.data['nc']} — "
                f"use a dataset with {nc} classes, or train from a yaml so the head is built for the data"
            )

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        self.run_callbacks(BEFORE_OPTIMIZER_STEP)
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema:
            self.ema.update(self.model)

    def save_model(self) -> bool:
        ema = deepcopy(self.ema.ema).float().to(memory_format=torch.contiguous_format)
        if hasattr(ema, "criterion"):
            ema.criterion = None
        buffer = io.BytesIO()
        torch.save(
            {
                "epoch": self.epoch,
                "best_fitness": self.best_fitness,
                "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
                "model": None,
                "ema": ema,
                "updates": self.ema.updates,
                "optimizer": deepcopy(self.optimizer.state_dict()),
                "scaler": self.scaler.state_dict(),
                "train_args": vars(self.args),
                "train_metrics": {**(self.metrics or {}), "fitness": self.fitness},
                "train_results": self.read_results_csv(),
                "date": datetime.now(timezone.utc).isoformat(),
                "version": __version__,
            },
            buffer,
        )
        data = buffer.getvalue()
        atomic_write_bytes(self.last, data)
        if self.best_fitness == self.fitness:
            atomic_write_bytes(self.best, data)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            atomic_write_bytes(self.wdir / f"epoch{self.epoch}.pt", data)
        return True

    def final_eval(self) -> None:
        """Strip optimizer state (and any distillation wrapper) but keep fp32, then validate best.pt."""
        with torch_distributed_zero_first(LOCAL_RANK):
            if RANK in {-1, 0}:
                results = None
                for path in (self.last, self.best):
                    if path.exists():
                        ckpt = read_checkpoint(path)
                        results = results or ckpt.get("train_results")
                        module = checkpoint_module(ckpt)
                        save_model_checkpoint(
                            getattr(module, "student_model", module),  # ultralytics' distill_model wrapper
                            path, base={**ckpt, "train_results": results},
                        )
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            self.validator.args.plots = self.args.plots
            self.validator.args.compile = False
            self.metrics = self.validator(model=self.best)
            self.metrics.pop("fitness", None)
            self.epoch += 1
            self.run_callbacks("on_fit_epoch_end")
            self.epoch -= 1


class SlimDetectionTrainer(KeepModelMixin, DetectionTrainer):
    """YOLO detection training on a kept model."""

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """ultralytics' model for its yamls; the anchor-based YOLOv5 family for ours (ultralytics cannot parse them)."""
        from yoloslim.models.yolov5.config import is_anchor_cfg

        if not is_anchor_cfg(cfg):
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if weights is not None:
            raise UserError("pretrained weights cannot be loaded into a yolov5-anchor yaml build — pass the trained "
                            "checkpoint itself as the model")
        from yoloslim.models.yolov5.model import YOLOv5DetectionModel

        model = YOLOv5DetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        return self.set_model_names_for_load(model)


class SlimRTDETRTrainer(KeepModelMixin, RTDETRTrainer):
    """RT-DETR training on a kept model."""


def trainer_class(model: str | nn.Module) -> type:
    from yoloslim.models.load import is_rtdetr_module

    if isinstance(model, nn.Module):
        return SlimRTDETRTrainer if is_rtdetr_module(model) else SlimDetectionTrainer
    if str(model).endswith(".pt"):
        return SlimRTDETRTrainer if is_rtdetr_module(checkpoint_module(read_checkpoint(model))) else SlimDetectionTrainer
    return SlimRTDETRTrainer if "rtdetr" in str(model).lower() else SlimDetectionTrainer
