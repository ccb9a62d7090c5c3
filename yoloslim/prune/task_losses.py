"""The detection loss split into its task parts, measured the same way every time.

PAGCP judges a candidate pruning by how much each task's loss grows (box/cls/dfl for ultralytics'
anchor-free heads, box/obj/cls for the anchor-based YOLOv5/YOLOv7 heads, giou/cls/l1 for RT-DETR).
Hundreds of candidates are compared with one base, so the measurement must be repeatable and cheap:
a fixed subset of the *training* split (never the data mAP is reported on), loaded once and kept in
memory, the model in eval mode (BatchNorm running statistics) and no gradients. Each part is summed
over the batches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.calibration import calibration_batches, loss_ready, model_input


class TaskLosses:
    """``losses(model) -> {task: loss summed over the calibration batches}``."""

    def __init__(self, batches: list[dict], source: str, min_parts: int = 2) -> None:
        self.batches = batches
        self.source = source  # named in errors
        # PAGCP weighs tasks against each other, so it needs two parts at least; the sparse run's safe cut only
        # bounds each task's rise, which a classifier's single loss can be judged by.
        self.min_parts = min_parts

    @classmethod
    def load(cls, data: str | Path, batches: int, imgsz: int, batch_size: int, stride: int,
             task: str = "detect", min_parts: int = 2) -> TaskLosses:
        """The first ``batches`` letterboxed, un-augmented training batches of ``data``; they must carry boxes."""
        if batches < 1:
            raise UserError(f"--calib-batches must be at least 1, got {batches}")
        kept = []
        for batch in calibration_batches(data, imgsz, batch_size, stride, task):
            kept.append({**batch, "img": model_input(batch["img"])})
            if len(kept) == batches:
                break
        if not kept:
            raise UserError(f"no calibration images found in the train split of {data} — check the dataset")
        if not sum(len(batch["cls"]) for batch in kept):
            raise UserError(f"the {len(kept)} calibration batch(es) from the train split of {data} carry no labelled "
                            f"boxes, so there is no detection loss to measure — label the training images")
        return cls(kept, str(data), min_parts)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Each task's loss of ``model`` (eval mode, no gradients), summed over the batches."""
        if not callable(getattr(model, "loss", None)):
            raise UserError(f"{type(model).__name__} has no detection loss (model.loss) to measure — PAGCP needs a "
                            f"detector whose loss is split into task parts")
        model.eval()
        totals: dict[str, float] = {}
        with loss_ready(model), torch.no_grad():
            for batch in self.batches:
                try:
                    _, items = model.loss(batch)
                except NotImplementedError:
                    raise UserError(f"{type(model).__name__} defines no loss — PAGCP needs a detector whose loss is "
                                    f"split into task parts") from None
                for task, value in _parts(items, model, self.min_parts).items():
                    totals[task] = totals.get(task, 0.0) + value
        return totals


def _parts(items, model: nn.Module, min_parts: int) -> dict[str, float]:
    """The loss items as named floats: a dict (ultralytics 8.4, our anchor losses), a vector named by the
    criterion's ``loss_names``, or a classifier's one scalar. Fewer than ``min_parts`` is refused."""
    if isinstance(items, torch.Tensor) and items.ndim == 0:
        items = {"loss": items}
    if isinstance(items, torch.Tensor) and items.ndim == 1:
        names = getattr(model.criterion, "loss_names", None) or [f"loss_{i}" for i in range(len(items))]
        items = dict(zip(names, items))
    if not isinstance(items, dict) or len(items) < min_parts:
        raise UserError(f"the loss of {type(model).__name__} has no task parts (box, cls, ...) — PAGCP compares the "
                        f"parts one by one; use a detector such as yolov8n, yolo11n or yolov5n")
    return {str(name): float(value) for name, value in items.items()}
