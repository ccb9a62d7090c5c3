"""The YOLOv7 family's yaml rows: ultralytics' Conv, Concat and RepConv, yoloslim's pooling rows, SPPCSPC and
IDetect. The row loop is the anchor family's (``models/yolov5/builder.py``).

ultralytics' ``RepConv(c1, c2, 3, 1)`` computes what the original's training-form RepConv computes (its
``conv1``/``conv2`` are the original's ``rbr_dense``/``rbr_1x1``) once BatchNorm uses eps 1e-3, which the
model class sets for every BatchNorm. A plain ``Detect`` row (the original's deploy yamls) builds the YOLOv5
head, which is what IDetect becomes once its implicit tensors are folded.
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.modules import Concat, Conv, RepConv

from yoloslim.models.yolov5.builder import LayerTable
from yoloslim.models.yolov5.head import AnchorDetect
from yoloslim.models.yolov7.blocks import MP, SP, SPPCSPC
from yoloslim.models.yolov7.head import IDetect

YOLOV7_TABLE = LayerTable("yolov7", {
    "Conv": Conv, "Concat": Concat, "MP": MP, "SP": SP, "SPPCSPC": SPPCSPC, "RepConv": RepConv,
    "nn.Upsample": nn.Upsample, "IDetect": IDetect, "Detect": AnchorDetect,
}, (Conv, SPPCSPC, RepConv))
