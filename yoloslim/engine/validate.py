"""Validation on a YOLO dataset through ultralytics' validators."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from yoloslim.data.checks import check_data_yaml

METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
}


def validate(model: str | Path | nn.Module, data: str | Path, imgsz: int = 640, batch: int = 16,
             device: str | None = None, verbose: bool = False) -> dict[str, float]:
    """P, R, mAP50, mAP50-95 of a checkpoint path or module; checks the class count first.

    ``device`` None: the first CUDA device if there is one, else the CPU.
    """
    from ultralytics.models.rtdetr.val import RTDETRValidator
    from ultralytics.models.yolo.detect import DetectionValidator

    from yoloslim.engine.device import resolve_device
    from yoloslim.engine.trainer import head_nc
    from yoloslim.models.load import is_rtdetr_module, load_module

    module = load_module(str(model) if isinstance(model, Path) else model)
    data_yaml = check_data_yaml(data, nc=head_nc(module))
    validator_cls = RTDETRValidator if is_rtdetr_module(module) else DetectionValidator
    args = dict(data=str(data_yaml), imgsz=imgsz, batch=batch, device=resolve_device(device), plots=False,
                verbose=verbose, save_json=False)
    stats = validator_cls(args=args)(model=module)
    return {short: float(stats[key]) for key, short in METRIC_KEYS.items()}
