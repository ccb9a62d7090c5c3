"""Trainer subclasses that keep a given (possibly pruned) model and write safe checkpoints.

Stock ultralytics rebuilds a model from its yaml when handed a checkpoint path, which silently
restores the unpruned architecture, and writes fp16 checkpoints non-atomically. These
subclasses use the pickled module as it is, save fp32 checkpoints atomically, add one event,
``on_before_optimizer_step``, fired after gradients are unscaled and before clipping, and let
extensions add results.csv columns through ``trainer.extra_metrics``.
Extensions (sparse training, distillation) are callback objects: ultralytics pickles callbacks
into DDP workers, so their settings survive the re-spawn. Their training state (connectors, penalty
state) goes into last.pt through the ``on_save_training_state`` event — they put it into
``trainer.training_state`` — never into best.pt or the model, and a resumed run hands it back to them
as ``trainer.resumed_state``.

Resuming reads last.pt with yoloslim's allowlisting unpickler (ultralytics' own resume check would
unpickle it unrestricted), keeps every setting of the run except those the caller passes and a
resumed run can change, and leaves args.yaml as the run started it.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from copy import deepcopy
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch import nn
from ultralytics.cfg import DEFAULT_CFG, DEFAULT_CFG_DICT, get_cfg
from ultralytics.models.rtdetr.train import RTDETRTrainer
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
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
OPTIMIZER_BUILT = "on_optimizer_built"  # the param groups are final after it: the scheduler and a resume read them
SAVE_TRAINING_STATE = "on_save_training_state"
TRAINING_STATE_KEY = "yoloslim_training_state"  # in last.pt only
# What a resumed run may change (the settings ultralytics lets a resume change: memory, device, logging).
RESUMABLE = frozenset({"imgsz", "batch", "device", "workers", "cache", "patience", "save_period", "plots", "val",
                       "close_mosaic", "time", "freeze", "channels_last", "augmentations", "data"})
RUN_IDENTITY = ("model", "resume")  # what the run was started from, kept in train_args through resumes
ARGS_YAML_KEY = "yoloslim_args_yaml"  # args.yaml as first written, so a resume writes it back unchanged


def head_nc(model: nn.Module) -> int | None:
    """Classes the head predicts: a detection head's ``nc``, a classifier's logits."""
    head = unwrap_model(model).model[-1]
    linear = getattr(head, "linear", None)
    return getattr(head, "nc", None) or (linear.out_features if isinstance(linear, nn.Linear) else None)


class KeepModelMixin:
    """Shared behaviour of yoloslim's trainers; mixed in before the ultralytics trainer class."""

    clip_grad_norm: float | None = 10.0
    extra_metrics: dict[str, float] | None = None  # extensions' per-epoch columns for results.csv
    train_only_losses: frozenset[str] = frozenset()  # loss items that validation cannot compute (distillation)

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None) -> None:
        self.run_identity: dict[str, Any] = {}
        self.training_state: dict[str, Any] = {}
        self.resumed_state: dict[str, Any] = {}
        self.args_yaml: dict[str, Any] = {}
        self._resume_ckpt: dict | None = None
        self._resume_changes: dict[str, Any] = {}
        super().__init__(cfg, overrides, _callbacks)
        _honour_thread_request(self.device)
        if RANK in {-1, 0}:
            path = self.save_dir / "args.yaml"
            if self.resume:  # ultralytics just rewrote it with last.pt as model and resume: put the run's back
                first = (self._resume_ckpt or {}).get(ARGS_YAML_KEY) or self.recorded_args()
                self.args_yaml = {**first, **self._resume_changes}
                _write_yaml(path, self.args_yaml)
            else:
                self.args_yaml = yaml.safe_load(path.read_text()) or {}

    def check_resume(self, overrides: dict) -> None:
        """Continue the run in ``args.resume``: its own settings, except the ``overrides`` it can take."""
        resume = self.args.resume
        self.resume = bool(resume)
        if not resume:
            return
        last = Path(str(resume))
        self._resume_ckpt = read_checkpoint(last)
        saved = dict(self._resume_ckpt.get("train_args") or {})
        self.args = get_cfg({**DEFAULT_CFG_DICT, **saved})
        changed = []
        for key, value in overrides.items():
            if key in RUN_IDENTITY or key == "save_dir":
                continue
            if key in RESUMABLE:
                if value is not None and value != getattr(self.args, key, None):
                    self._resume_changes[key] = value
                    setattr(self.args, key, value)
            elif value != getattr(self.args, key, None):
                changed.append(f"{key} ({getattr(self.args, key, None)!r} -> {value!r})")
        if changed:
            raise UserError(f"cannot change {', '.join(changed)} when resuming {last} — a resumed run keeps its "
                            f"settings (it may change only {', '.join(sorted(RESUMABLE))}); start a new run instead")
        if not 0 <= self._resume_ckpt.get("epoch", -1) < self.args.epochs - 1:
            raise UserError(f"{last} holds a finished run (or no training state), so there is nothing to resume — "
                            f"train from it instead (--weights {last})")
        self.run_identity = {key: saved.get(key, DEFAULT_CFG_DICT.get(key)) for key in RUN_IDENTITY}
        self.args.model = self.args.resume = str(last)

    def recorded_args(self) -> dict[str, Any]:
        """The run's settings as args.yaml and the checkpoints record them: what it was started from, not last.pt."""
        return {**vars(self.args), **self.run_identity}

    def train(self):
        with flushed_denormals():  # also in DDP workers, which call train() themselves
            return super().train()

    def save_metrics(self, metrics: dict) -> None:
        super().save_metrics({**metrics, **(self.extra_metrics or {})})

    def label_loss_items(self, loss_items=None, prefix: str = "train"):
        """As ultralytics, but validation has no columns for losses it cannot compute (no teacher there)."""
        if prefix != "val" or not self.train_only_losses:
            return super().label_loss_items(loss_items, prefix)
        if loss_items is None:
            return [f"{prefix}/{name}" for name in self.loss_names if name not in self.train_only_losses]
        kept = {k: v for k, v in loss_items.items() if k not in self.train_only_losses}
        return super().label_loss_items(kept, prefix)

    def setup_model(self):
        ckpt = None
        if not isinstance(self.model, nn.Module):
            if not str(self.model).endswith(".pt"):
                return super().setup_model()
            # resume (read once, in check_resume), or a trainer built from a checkpoint path (DDP workers)
            ckpt = self._resume_ckpt if self._resume_ckpt is not None else read_checkpoint(self.model)
            self._resume_ckpt = None
            self.model = checkpoint_module(ckpt)
        self.resumed_state = dict((ckpt or {}).get(TRAINING_STATE_KEY) or {}) if self.resume else {}
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

    def build_optimizer(self, *args, **kwargs):
        """ultralytics' optimizer, then extensions may regroup its parameters (before the scheduler records each
        group's initial lr and before a resumed run loads its optimizer state into the groups)."""
        self.optimizer = super().build_optimizer(*args, **kwargs)
        self.run_callbacks(OPTIMIZER_BUILT)
        return self.optimizer

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
        self.training_state = {}
        self.run_callbacks(SAVE_TRAINING_STATE)
        ckpt = {
            "epoch": self.epoch,
            "best_fitness": self.best_fitness,
            "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
            "model": None,
            "ema": ema,
            "updates": self.ema.updates,
            "optimizer": deepcopy(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "train_args": self.recorded_args(),
            "train_metrics": {**(self.metrics or {}), "fitness": self.fitness},
            "train_results": self.read_results_csv(),
            "date": datetime.now(timezone.utc).isoformat(),
            "version": __version__,
            ARGS_YAML_KEY: self.args_yaml,
        }
        last = _serialize({**ckpt, TRAINING_STATE_KEY: self.training_state} if self.training_state else ckpt)
        atomic_write_bytes(self.last, last)
        if self.best_fitness == self.fitness:  # best.pt holds the detector, never the extensions' state
            atomic_write_bytes(self.best, _serialize(ckpt) if self.training_state else last)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            atomic_write_bytes(self.wdir / f"epoch{self.epoch}.pt", last)
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


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while training, then return to torch's default.

    Sparse training and group penalties drive many weights, activations and gradients towards zero; once
    they are denormal, every CPU multiply with them takes a slow path. A group_reg-pruned yolov8n measured
    0.42 s per forward+backward at batch 8 × 160 px with denormals and 0.13 s without (docs/BENCHMARKS.md).
    Values below 1.2e-38 carry nothing a detector needs. CUDA kernels are not affected by this switch.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _honour_thread_request(device: torch.device) -> None:
    """An explicit ``OMP_NUM_THREADS`` decides CPU training threads.

    ultralytics' device selection sets torch to all cores but one (one thread on 2 cores), whatever the
    environment says; yolov8n trained 1.4x faster here with the 2 threads the user asked for.
    """
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if device.type == "cpu" and requested.isdigit() and int(requested) > 0:
        torch.set_num_threads(int(requested))


def _serialize(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    """args.yaml as ultralytics writes it (values it cannot represent as text), but atomically."""
    plain = {k: list(v) if isinstance(v, tuple) else v if isinstance(v, (int, float, str, bool, list, dict, type(None)))
             else str(v) for k, v in data.items()}
    atomic_write_bytes(path, yaml.dump(plain, sort_keys=False, allow_unicode=True, Dumper=yaml.SafeDumper).encode())


class SlimDetectionTrainer(KeepModelMixin, DetectionTrainer):
    """YOLO detection training on a kept model."""

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """ultralytics' model for its yamls; the anchor-based YOLOv5/YOLOv7 families for ours (ultralytics cannot
        parse them)."""
        from yoloslim.models.anchor_specs import build_anchor_model, is_anchor_cfg

        if not is_anchor_cfg(cfg):
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if weights is not None:
            raise UserError("pretrained weights cannot be loaded into an anchor-based yaml build — pass the trained "
                            "checkpoint itself as the model")
        model = build_anchor_model(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        return self.set_model_names_for_load(model)


class SlimRTDETRTrainer(KeepModelMixin, RTDETRTrainer):
    """RT-DETR training on a kept model."""


class SlimSegmentationTrainer(KeepModelMixin, SegmentationTrainer):
    """Instance-segmentation training on a kept model."""


class SlimPoseTrainer(KeepModelMixin, PoseTrainer):
    """Pose training on a kept model."""


class SlimOBBTrainer(KeepModelMixin, OBBTrainer):
    """Oriented-box training on a kept model."""


class SlimClassificationTrainer(KeepModelMixin, ClassificationTrainer):
    """Classification training on a kept model."""


TRAINERS = {"detect": SlimDetectionTrainer, "segment": SlimSegmentationTrainer, "pose": SlimPoseTrainer,
            "obb": SlimOBBTrainer, "classify": SlimClassificationTrainer}


def trainer_class(model: str | nn.Module) -> type:
    """The trainer for the model's task (RT-DETR has its own); a checkpoint path is read to see its head."""
    from yoloslim.engine.tasks import task_of
    from yoloslim.models.load import is_rtdetr_module

    if not isinstance(model, nn.Module) and str(model).endswith(".pt"):
        model = checkpoint_module(read_checkpoint(model))
    if isinstance(model, nn.Module):
        return SlimRTDETRTrainer if is_rtdetr_module(model) else TRAINERS[task_of(model)]
    return SlimRTDETRTrainer if "rtdetr" in str(model).lower() else TRAINERS[task_of(model)]
