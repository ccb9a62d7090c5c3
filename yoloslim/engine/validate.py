"""Validation on a dataset through the ultralytics validator of the model's task."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def validate(model: str | Path | nn.Module, data: str | Path, imgsz: int = 640, batch: int = 16,
             device: str | None = None, verbose: bool = False) -> dict[str, float]:
    """The task's metrics of a checkpoint path or module, after checking the dataset fits the model.

    Box tasks give precision, recall, map50 and map50_95 (rotated boxes for OBB); segment adds mask_map50(_95),
    pose adds pose_map50(_95); classify gives top1 and top5. ``device`` None: the first CUDA device if there
    is one, else the CPU.
    """
    from ultralytics.models.rtdetr.val import RTDETRValidator

    from yoloslim.engine.device import resolve_device
    from yoloslim.engine.tasks import check_data_for, task_spec
    from yoloslim.models.load import is_rtdetr_module, load_module

    module = load_module(str(model) if isinstance(model, Path) else model)
    task = task_spec(module)
    dataset = check_data_for(module, data)
    validator_cls = RTDETRValidator if is_rtdetr_module(module) else task.validator_class()
    args = dict(data=str(dataset), imgsz=imgsz, batch=batch, device=resolve_device(device), plots=False,
                verbose=verbose, save_json=False, task=task.name)
    stats = validator_cls(args=args)(model=module)
    return {short: float(stats[key]) for key, short in task.metrics.items()}
