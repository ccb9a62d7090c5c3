"""BN recalibration replaces running statistics by their exact average over the batches and touches no weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.prune import recalibrate
from yoloslim.prune.recalibrate import recalibrate_bn


def test_statistics_become_the_average_over_the_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.03), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model.eval()
    images = [torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8) for _ in range(3)]
    monkeypatch.setattr("yoloslim.prune.calibration.calibration_batches",
                        lambda *args: [{"img": x} for x in images])
    weights = {k: v.clone() for k, v in model.named_parameters()}

    used = recalibrate_bn(model, "unused.yaml", batches=2, imgsz=8, batch=2, progress=False)

    assert used == 4
    with torch.no_grad():
        features = [model[0](x.float() / 255) for x in images[:2]]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    expected_var = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in features]).mean(0)
    bn = model[1]
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-6)
    assert bn.momentum == 0.03 and not model.training
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())


@pytest.mark.slow
def test_pruned_detector_gets_new_statistics_and_keeps_its_weights(shapes_data: str) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.engine.checkpoint import model_meta
    from yoloslim.prune.api import prune_model

    torch.manual_seed(0)
    pruned = prune_model(DetectionModel("yolov8n.yaml", nc=3, verbose=False), speed_up=1.5, imgsz=64,
                         log=lambda _: None).model
    norms = recalibrate.batch_norms(pruned)
    before_stats = [bn.running_mean.clone() for bn in norms]
    weights = {k: v.clone() for k, v in pruned.named_parameters()}

    recalibrate_bn(pruned, shapes_data, batches=2, imgsz=64, batch=4, progress=False)

    assert all(torch.equal(weights[k], v) for k, v in pruned.named_parameters())
    assert all(not torch.equal(bn.running_mean, old) for bn, old in zip(norms, before_stats))
    assert all(bn.num_batches_tracked.item() == 2 for bn in norms)
    assert model_meta(pruned)["recalibrated"] == {"batches": 2, "images": 8}


def test_a_failed_recalibration_leaves_the_statistics_as_they_were(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from yoloslim.errors import UserError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(0.5)
    monkeypatch.setattr("yoloslim.prune.calibration.calibration_batches", lambda *args: [])
    with pytest.raises(UserError, match="no images"):
        recalibrate_bn(model, tmp_path / "data.yaml", batches=2, progress=False)
    assert torch.all(model[1].running_mean == 0.5) and model[1].momentum == 0.1
