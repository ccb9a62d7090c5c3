"""What checkpoints of the original YOLOv5 repo (v6.0-v7.0) may contain, for the shared importer
(``models/original_checkpoints.py``)."""

from __future__ import annotations

from yoloslim.models.original_checkpoints import Dialect

YOLOV5_DIALECT = Dialect(
    family="yolov5",
    classes=("models.yolo.DetectionModel", "models.yolo.Model", "models.yolo.Detect", "models.common.Conv",
             "models.common.C3", "models.common.Bottleneck", "models.common.SPPF", "models.common.Concat"),
    heads={"Detect": "AnchorDetect"},
)
