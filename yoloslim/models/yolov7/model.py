"""The YOLOv7 detection model: the anchor family's ``DetectionModel`` with YOLOv7's layer table and loss.

Building, strides, anchors in grid units, the bias prior and BatchNorm settings (eps 1e-3, momentum 0.03, as
the original) are the YOLOv5 family's. Training uses the OTA assignment by default (the original's hyp files
set ``loss_ota: 1``); ``assignment: yolov5`` in the model yaml trains with the plain YOLOv5 assignment instead.
"""

from __future__ import annotations

from pathlib import Path

from yoloslim.errors import UserError
from yoloslim.models.yolov5.builder import LayerTable
from yoloslim.models.yolov5.model import YOLOv5DetectionModel
from yoloslim.models.yolov7.builder import YOLOV7_TABLE

ASSIGNMENTS = ("ota", "yolov5")


class YOLOv7DetectionModel(YOLOv5DetectionModel):
    """YOLOv7 (tiny, base, x) from a yaml name/path or a model dict in the original schema."""

    layer_table: LayerTable = YOLOV7_TABLE

    def __init__(self, cfg: str | Path | dict = "yolov7-tiny.yaml", ch: int = 3, nc: int | None = None,
                 verbose: bool = True):
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        if self.assignment not in ASSIGNMENTS:
            raise UserError(f"assignment {self.assignment!r} in the model yaml is unknown — use one of "
                            f"{', '.join(ASSIGNMENTS)}")

    @property
    def assignment(self) -> str:
        """How training assigns targets to predictions: the yaml's ``assignment`` entry, OTA by default."""
        return str(self.yaml.get("assignment", ASSIGNMENTS[0]))

    def init_criterion(self):
        if self.assignment == "yolov5":
            return super().init_criterion()
        from yoloslim.models.yolov7.loss import OTALoss

        return OTALoss(self)
