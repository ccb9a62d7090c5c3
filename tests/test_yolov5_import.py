"""Checkpoints written by the original YOLOv5 repo: imported without running code from them, strictly, and
accepted wherever a checkpoint is.

The "original" files are made here: our model's modules are given stand-in classes registered as
``models.yolo``/``models.common`` with the original's names and attribute layout (the ``anchors`` buffer,
stale ``grid``/``anchor_grid`` lists, ``yaml``/``names``/``nc``/``hyp`` on the model), pickled in fp16 under
the dict keys train.py writes. The stand-ins are unregistered before importing, as on a user's machine.
"""

from __future__ import annotations

import copy
import os
import pathlib
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from ultralytics.nn.modules import C3, SPPF, Bottleneck, Concat, Conv

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.cli import main
from yoloslim.errors import UserError
from yoloslim.models.yolov5.head import AnchorDetect
from yoloslim.models.original_checkpoints import import_checkpoint
from yoloslim.models.yolov5.model import YOLOv5DetectionModel

IMGSZ = 64
COMMON = {Conv: "Conv", C3: "C3", Bottleneck: "Bottleneck", SPPF: "SPPF", Concat: "Concat"}


def _original_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("models", "models.yolo", "models.common")}
    for module, names in (("models.yolo", ("DetectionModel", "Model", "Detect")), ("models.common", COMMON.values())):
        for name in names:
            setattr(modules[module], name, type(name, (nn.Module,), {"__module__": module, "__qualname__": name}))
    return modules


def _as_original(model: YOLOv5DetectionModel, modules: dict, root: str, names) -> nn.Module:
    original = copy.deepcopy(model)
    for m in original.modules():
        if type(m) in COMMON:
            m.__class__ = getattr(modules["models.common"], COMMON[type(m)])
        elif isinstance(m, AnchorDetect):
            m.__class__ = modules["models.yolo"].Detect
            m._buffers = OrderedDict(anchors=m._buffers.pop("anchor_wh"))
            m.grid = [torch.zeros(1)] * m.nl  # cached and stale in real files
            m.anchor_grid = [torch.ones(1)] * m.nl
    original.__class__ = getattr(modules["models.yolo"], root)
    original.yaml = {k: model.yaml[k] for k in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone",
                                                "head")} | {"ch": 3}
    original.names, original.nc = names, model.yaml["nc"]
    original.hyp = {"lr0": np.float64(0.01), "box": 0.05}  # numpy scalars appear after hyperparameter evolution
    return original


def write_original(path: Path, model: YOLOv5DetectionModel, root: str, names, ema: YOLOv5DetectionModel | None = None,
                   extra: dict | None = None) -> Path:
    """Save like the original train.py: fp16 modules under models.*; a run in progress also has EMA and state."""
    modules = _original_modules()
    sys.modules.update(modules)
    try:
        ckpt = {
            "epoch": -1, "best_fitness": None,
            "model": _as_original(model, modules, root, names).half(),
            "ema": None, "updates": None, "optimizer": None,
            "opt": {"weights": "yolov5n.pt", "imgsz": 640, "save_dir": pathlib.PosixPath("runs/train/exp")},
            "git": {"url": "https://example.invalid/yolov5", "branch": "master", "commit": "0" * 7},
            "date": "2023-01-01T00:00:00",
        }
        if ema is not None:
            ckpt.update(epoch=7, best_fitness=np.array([0.25]), ema=_as_original(ema, modules, root, names).half(),
                        updates=120, optimizer={"state": {0: {"momentum_buffer": torch.zeros(3)}},
                                                "param_groups": [{"lr": 0.01, "momentum": 0.937, "params": [0]}]})
        torch.save({**ckpt, **(extra or {})}, path)
    finally:
        for name in modules:
            sys.modules.pop(name)
    return path


def _model(seed: int) -> YOLOv5DetectionModel:
    torch.manual_seed(seed)
    return YOLOv5DetectionModel("yolov5n-anchor.yaml", nc=3, verbose=False)


def _outputs(model: nn.Module) -> torch.Tensor:
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)[0]


@pytest.mark.parametrize("root, names, in_progress", [
    ("DetectionModel", {0: "circle", 1: "square", 2: "triangle"}, False),  # v7.0, finished run
    ("Model", ["circle", "square", "triangle"], True),  # v6.0/v6.1, run in progress (EMA + training state)
])
def test_import_round_trip(root: str, names, in_progress: bool, tmp_path: Path) -> None:
    source, ema = _model(0), _model(1) if in_progress else None
    path = write_original(tmp_path / "best.pt", source, root, names, ema=ema)
    assert "models" not in sys.modules
    model = import_checkpoint(path)["model"]
    assert type(model) is YOLOv5DetectionModel and next(model.parameters()).dtype == torch.float32
    reference = (ema or source).half().float()  # what the fp16 file holds
    assert (_outputs(model) - _outputs(reference)).abs().max() < 1e-3
    assert model.names == {0: "circle", 1: "square", 2: "triangle"}
    assert model.yoloslim["imported"]["class"] == f"models.yolo.{root}"
    assert model.yoloslim["imported"]["weights"] == ("ema" if in_progress else "model")


def test_import_command_writes_a_checkpoint_ultralytics_loads(tmp_path: Path, capsys) -> None:
    from ultralytics import YOLO

    source = _model(0)
    path = write_original(tmp_path / "best.pt", source, "DetectionModel", ["circle", "square", "triangle"])
    assert main(["import", "--weights", str(path), "--out", str(tmp_path / "model.pt")]) == 0
    assert "1,767,976 parameters" in capsys.readouterr().out
    loaded = YOLO(str(tmp_path / "model.pt"))
    assert loaded.task == "detect" and loaded.model.names[2] == "triangle"
    assert (_outputs(loaded.model) - _outputs(source.half().float())).abs().max() < 1e-3
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_commands_take_the_original_file_directly(tmp_path: Path, shapes_data: str) -> None:
    from yoloslim.engine.export import export_onnx
    from yoloslim.engine.validate import validate

    path = write_original(tmp_path / "best.pt", _model(0), "DetectionModel", ["circle", "square", "triangle"])
    assert set(validate(path, shapes_data, imgsz=IMGSZ, batch=8)) == {"precision", "recall", "map50", "map50_95"}
    result = export_onnx(path, imgsz=IMGSZ, out=tmp_path / "best.onnx")
    assert result.path.is_file() and result.max_abs_diff < 1e-3  # ONNX Runtime vs PyTorch


class _RunsACommand:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_file_that_calls_outside_the_allowlist_is_refused_unrun(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "was-run"
    path = write_original(tmp_path / "best.pt", _model(0), "DetectionModel", None,
                          extra={"opt": _RunsACommand(f"touch {marker}")})
    for command in (["import", "--weights", str(path), "--out", str(tmp_path / "x.pt")],
                    ["info", "--weights", str(path), "--no-latency"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "system" in err and "refused" in err, err
    assert not marker.exists() and not (tmp_path / "x.pt").exists()


def test_a_fork_class_is_named_in_one_line(tmp_path: Path) -> None:
    modules = _original_modules()
    fork_block = type("GhostConv", (nn.Module,), {"__module__": "models.common", "__qualname__": "GhostConv"})
    modules["models.common"].GhostConv = fork_block
    model = modules["models.yolo"].DetectionModel()
    model.block = fork_block()
    sys.modules.update(modules)
    try:
        torch.save({"model": model, "ema": None}, tmp_path / "fork.pt")
    finally:
        for name in modules:
            sys.modules.pop(name)
    with pytest.raises(UserError, match="models.common.GhostConv") as error:
        import_checkpoint(tmp_path / "fork.pt")
    assert "\n" not in str(error.value)


def test_weights_that_do_not_fit_their_yaml_are_reported_in_one_line(tmp_path: Path) -> None:
    source = _model(0)
    wrong = YOLOv5DetectionModel("yolov5s-anchor.yaml", nc=3, verbose=False)
    wrong.yaml = source.yaml  # the yaml says yolov5n, the weights are yolov5s
    path = write_original(tmp_path / "best.pt", wrong, "DetectionModel", None)
    with pytest.raises(UserError, match=r"do not fit .* model\.0\.conv\.weight is \(32, 3, 6, 6\)") as error:
        import_checkpoint(path)
    assert "\n" not in str(error.value)


def test_bad_import_and_resume_requests_are_one_line(tmp_path: Path, capsys) -> None:
    from yoloslim.engine.checkpoint import save_model_checkpoint

    original = write_original(tmp_path / "best.pt", _model(0), "DetectionModel", None)
    ours = save_model_checkpoint(_model(0), tmp_path / "ours.pt")
    for command, words in (
        (["import", "--weights", str(ours), "--out", str(tmp_path / "x.pt")], "not a checkpoint of the original"),
        (["import", "--weights", str(original), "--out", str(original)], "--out is the input file"),
        (["train", "--model", "yolov5n-anchor.yaml", "--data", "d.yaml", "--resume", str(original)], "cannot resume"),
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "x.pt").exists()
