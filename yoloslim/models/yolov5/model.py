"""The anchor-based YOLOv5 detection model: an ultralytics ``DetectionModel`` built from a YOLOv5 model dict.

Subclassing ``DetectionModel`` keeps everything ultralytics does with a detector working unchanged:
the indexed forward, ``fuse()``, ``info()``, device moves of the head's tensors, the trainer, the
validator, the exporter, and ``YOLO(path)`` loading (the class lives in the installed package, so
pickled checkpoints find it). What differs is how it is built and its loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights

from yoloslim.models.anchor_specs import load_cfg
from yoloslim.models.yolov5.builder import YOLOV5_TABLE, LayerTable, build_layers

STRIDE_PROBE = 256  # input size of the forward that measures each output level's stride


class YOLOv5DetectionModel(DetectionModel):
    """Anchor-based YOLOv5 (v6.0-v7.0 architecture) from a yaml name/path or a model dict (original schema)."""

    layer_table: LayerTable = YOLOV5_TABLE

    def __init__(self, cfg: str | Path | dict = "yolov5n-anchor.yaml", ch: int = 3, nc: int | None = None,
                 verbose: bool = True):
        nn.Module.__init__(self)  # DetectionModel.__init__ would parse the dict with ultralytics' own parser
        self.yaml = load_cfg(cfg)
        self.yaml["channels"] = ch
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        self.model, self.save = build_layers(self.yaml, ch, self.layer_table)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.inplace = True
        head = self.model[-1]
        self.model.eval()  # measuring strides must not touch BatchNorm statistics
        head.training = True  # raw per-level outputs: their grid sizes give the strides
        with torch.no_grad():
            levels = self.forward(torch.zeros(1, ch, STRIDE_PROBE, STRIDE_PROBE))
        head.stride = torch.tensor([STRIDE_PROBE / level.shape[2] for level in levels])
        head.anchor_wh /= head.stride.view(-1, 1, 1)  # stored in grid units, as the original does
        self.stride = head.stride
        self.model.train()
        head.bias_init()
        initialize_weights(self)
        if verbose:
            self.info()
            LOGGER.info("")

    def init_criterion(self):
        from yoloslim.models.yolov5.loss import YOLOv5Loss

        return YOLOv5Loss(self)
