"""The anchor-based YOLOv5 family: sizes, names, the head's output format, the loss's assignment, training."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.errors import UserError
from yoloslim.models.load import load_model, load_module, resolve_spec
from yoloslim.models.yolov5.loss import match_targets
from yoloslim.models.yolov5.model import YOLOv5DetectionModel
from yoloslim.report.metrics import count_params

IMGSZ = 64


@pytest.mark.parametrize("name, nc, params, fused", [
    ("yolov5n-anchor.yaml", 80, 1_872_157, 1_867_405),
    ("yolov5s-anchor.yaml", 80, 7_235_389, 7_225_885),
    ("yolov5n-anchor.yaml", 10, 1_777_447, None),
    ("yolov5s-anchor.yaml", 10, 7_046_599, None),
])
def test_reference_parameter_counts(name: str, nc: int, params: int, fused: int | None) -> None:
    model = YOLOv5DetectionModel(name, nc=nc, verbose=False)
    assert count_params(model) == params
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)
    assert isinstance(model.model[9].cv1.act, torch.nn.SiLU)  # SPPF's first conv is activated, as in YOLOv5
    if fused:
        assert count_params(model.eval().fuse(verbose=False)) == fused


def test_names_resolve_to_the_family_without_touching_ultralytics_yolov5u(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    assert resolve_spec("yolov5n-anchor.yaml") == ("yolov5n-anchor.yaml", False)
    assert type(load_module("yolov5n-anchor.yaml")) is YOLOv5DetectionModel
    assert type(load_model("yolov5n-anchor.yaml").model) is YOLOv5DetectionModel
    assert type(load_module("yolov5nu.yaml")) is DetectionModel  # ultralytics' anchor-free v5u stays its own
    with pytest.raises(UserError, match="yolov5n-anchor.yaml"):
        resolve_spec("yolov5q-anchor.yaml")

    # a yaml in the original repo's schema (explicit multiples, no scales) is the same model
    family = load_module("yolov5n-anchor.yaml").yaml
    original = {k: family[k] for k in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")}
    path = tmp_path / "yolov5n.yaml"
    path.write_text(yaml.safe_dump(original))
    assert count_params(load_module(str(path))) == 1_872_157


def test_anchor_matching_picks_the_expected_anchors_and_cells() -> None:
    """A 6x7-cell box centred at (3.3, 5.7) on an 8x8 grid: too large for anchor 0 (ratio > 4), matched to
    anchors 1 and 2 at its own cell, the left neighbour (x is in the left half of its cell) and the lower one
    (y is in the lower half). A tiny box matches no anchor of this level."""
    anchor_wh = YOLOv5DetectionModel("yolov5n-anchor.yaml", nc=3, verbose=False).model[-1].anchor_wh[0]
    box = torch.tensor([[0, 2, 3.3 / 8, 5.7 / 8, 6 / 8, 7 / 8]])
    m = match_targets(box, anchor_wh, (8, 8))
    got = {(a, r, c) for a, r, c in zip(m.anchor.tolist(), m.row.tolist(), m.col.tolist())}
    assert got == {(a, r, c) for a in (1, 2) for r, c in ((5, 3), (5, 2), (6, 3))}
    assert m.cls.tolist() == [2] * 6 and m.image.tolist() == [0] * 6
    left = (m.col == 2).nonzero()[0, 0]
    assert m.box[left].tolist() == pytest.approx([1.3, 0.7, 6.0, 7.0])  # xy relative to the neighbour's corner
    assert torch.equal(m.anchor_wh[left], anchor_wh[m.anchor[left]])
    tiny = torch.tensor([[0, 0, 0.5, 0.5, 0.2 / 8, 0.2 / 8]])
    assert len(match_targets(tiny, anchor_wh, (8, 8)).anchor) == 0


def test_eval_output_goes_through_ultralytics_nms() -> None:
    """Raw outputs that encode one known box come back from ultralytics' NMS as that box, class and obj x cls."""
    from ultralytics.utils.nms import non_max_suppression

    model = YOLOv5DetectionModel("yolov5n-anchor.yaml", nc=3, verbose=False).eval()
    head = model.model[-1]
    y, raw = model(torch.rand(1, 3, IMGSZ, IMGSZ))
    assert y.shape == (1, 4 + 3, 3 * (8 * 8 + 4 * 4 + 2 * 2))
    assert [tuple(r.shape) for r in raw] == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 8), (1, 3, 2, 2, 8)]

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    raw = [torch.full_like(r, -12.0) for r in raw]
    stride, (aw, ah) = 8, (head.anchor_wh[0, 1] * 8).tolist()  # level 0, anchor 1 (16 x 30 px)
    cx, cy, w, h = 21.0, 27.0, 14.0, 36.0  # centre in cell (col 2, row 3)
    raw[0][0, 1, 3, 2] = torch.tensor([
        logit((cx / stride - 2 + 0.5) / 2), logit((cy / stride - 3 + 0.5) / 2),
        logit(math.sqrt(w / aw) / 2), logit(math.sqrt(h / ah) / 2),
        logit(0.9), logit(0.1), logit(0.1), logit(0.8),
    ])
    detections = non_max_suppression(head.decode(raw), conf_thres=0.25)[0]
    assert detections.shape == (1, 6)
    assert detections[0, :4].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], abs=1e-3)
    assert detections[0, 4].item() == pytest.approx(0.9 * 0.8, abs=1e-4)
    assert detections[0, 5].item() == 2


def _fixed_loss(model: torch.nn.Module, batches: list[dict]) -> float:
    model = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        return sum(float(model.loss(b, model(b["img"]))[0].sum()) for b in batches)


@pytest.mark.slow
def test_one_epoch_lowers_the_loss_and_validates_with_ultralytics(shapes_data: str, tmp_path: Path) -> None:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.engine.train import train
    from yoloslim.prune.calibration import calibration_batches

    batches = [{**b, "img": b["img"].float() / 255} for b in calibration_batches(shapes_data, IMGSZ, 8, 32)]
    torch.manual_seed(0)
    model = YOLOv5DetectionModel("yolov5n-anchor.yaml", nc=3, verbose=False)
    before = _fixed_loss(model, batches)
    # nbs=batch: one optimizer step per batch (ultralytics otherwise accumulates to 64 images)
    result = train(model, shapes_data, epochs=1, imgsz=IMGSZ, batch=4, nbs=4, warmup_epochs=0, optimizer="AdamW",
                   lr0=0.005, workers=0, plots=False, val=True, project=tmp_path, name="v5")
    trained = checkpoint_module(read_checkpoint(result.last))
    assert type(trained) is YOLOv5DetectionModel
    assert _fixed_loss(trained, batches) < before
    with open(result.save_dir / "results.csv") as f:
        row = next(csv.DictReader(f))
    for column in ("train/box_loss", "train/obj_loss", "train/cls_loss", "val/box_loss", "val/obj_loss"):
        assert float(row[column]) > 0, column
    for key in ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert math.isfinite(result.metrics[key]), key  # final validation of best.pt by DetectionValidator
