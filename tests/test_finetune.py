"""Finetuning must train the pruned architecture itself — also after an interrupted run is resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)

IMGSZ = 64


class Interrupted(Exception):
    """Raised by a callback to stop a run right after its first checkpoint, like a crash would."""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from yoloslim.data import generate_dataset

    out = tmp_path_factory.mktemp("finetune-data") / "shapes"
    return generate_dataset("shapes", out, n_train=8, n_val=4, imgsz=IMGSZ, show_progress=False)


@pytest.fixture(scope="module")
def pruned_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 3-class yolov8n pruned to 1.5x, saved as the prune command does; with its parameter count."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.engine.checkpoint import save_model_checkpoint
    from yoloslim.prune.api import prune_model

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    model.args = dict(DEFAULT_CFG_DICT)
    result = prune_model(model, speed_up=1.5, imgsz=IMGSZ, log=lambda _: None)
    path = save_model_checkpoint(result.model, tmp_path_factory.mktemp("finetune-model") / "pruned.pt",
                                 meta={"pruned": result.summary()})
    return path, result.params


def params_in(path: Path) -> int:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint

    return sum(p.numel() for p in checkpoint_module(read_checkpoint(path)).parameters())


@pytest.mark.slow
def test_finetune_command_trains_the_pruned_model(pruned_pt: tuple[Path, int], shapes: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    from yoloslim.cli import main

    path, params = pruned_pt
    code = main(["finetune", "--weights", str(path), "--data", str(shapes), "--epochs", "1", "--imgsz", str(IMGSZ),
                 "--batch", "4", "--workers", "0", "--no-plots", "--project", str(tmp_path), "--name", "ft"])
    assert code == 0
    for name in ("best.pt", "last.pt"):
        weights = tmp_path / "ft" / "weights" / name
        assert params_in(weights) == params
        reloaded = YOLO(str(weights)).model
        assert sum(p.numel() for p in reloaded.parameters()) == params
        assert next(reloaded.parameters()).dtype == torch.float32
        assert reloaded.yoloslim["pruned"]["method"] == "lamp"


@pytest.mark.slow
def test_resume_after_interruption_keeps_the_pruned_structure(pruned_pt: tuple[Path, int], shapes: Path,
                                                              tmp_path: Path) -> None:
    from yoloslim.cli import main
    from yoloslim.engine.checkpoint import read_checkpoint
    from yoloslim.prune.api import finetune

    path, params = pruned_pt
    saved: list[Path] = []

    def interrupt(trainer) -> None:
        saved.append(Path(trainer.last))
        raise Interrupted

    with pytest.raises(Interrupted):
        finetune(path, shapes, epochs=2, imgsz=IMGSZ, batch=4, project=tmp_path, name="run", workers=0, plots=False,
                 callbacks=[("on_model_save", interrupt)])
    last = saved[0]
    assert read_checkpoint(last)["epoch"] == 0 and params_in(last) == params

    code = main(["finetune", "--weights", str(path), "--data", str(shapes), "--epochs", "2", "--imgsz", str(IMGSZ),
                 "--batch", "4", "--workers", "0", "--resume", str(last)])
    assert code == 0
    finished = read_checkpoint(last)
    assert finished["epoch"] == -1 and finished["optimizer"] is None  # the run completed and was finalised
    assert params_in(last) == params == params_in(last.with_name("best.pt"))
