"""ultralytics' ``YOLO`` wrapper for the anchor-based families, so ``load_model`` has one to return for their yamls.

``YOLO("yolov5n-anchor.yaml")`` would hand the dict to ultralytics' own parser, which cannot build it. This
subclass builds the family's model (``YOLOv5DetectionModel``, ``YOLOv7DetectionModel``) instead and trains
with yoloslim's detection trainer (which builds the family from a yaml). Checkpoints need no wrapper: plain ``YOLO(path)`` unpickles our classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics import YOLO
from ultralytics.cfg import DEFAULT_CFG_DICT

from yoloslim.models.anchor_specs import build_anchor_model


class AnchorYOLOv5(YOLO):
    """``AnchorYOLOv5("yolov5s-anchor.yaml")``: build, train, validate, predict and export like ``YOLO``."""

    def _new(self, cfg: str | Path, task: str | None = None, verbose: bool = False) -> None:
        self.cfg = self.model_name = str(cfg)
        self.task = "detect"
        self.model = build_anchor_model(cfg, verbose=verbose)
        self.overrides.update(model=self.cfg, task=self.task)
        self.model.args = {**DEFAULT_CFG_DICT, **self.overrides}
        self.model.task = self.task

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        from yoloslim.engine.trainer import SlimDetectionTrainer

        tasks = super().task_map
        return {**tasks, "detect": {**tasks["detect"], "model": type(self.model), "trainer": SlimDetectionTrainer}}
