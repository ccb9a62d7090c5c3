"""The original YOLOv7 as a yoloslim family: sizes, import of files the original repo writes, deployment
reparameterization, and pruned/slimmed models that reload in a fresh process.

The "original" files are made here as in test_yolov5_import.py: our modules get stand-in classes registered
as ``models.yolo``/``models.common`` with the original's names and layout (RepConv as ``rbr_dense``/
``rbr_1x1`` Sequentials, IDetect with ``anchors`` and ``anchor_grid`` buffers, Conv rows naming their
activation in the yaml), pickled in fp16 under the keys the original train.py writes; ``init.pt`` is the
bare fp32 module. The stand-ins are unregistered before importing, as on a user's machine.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from ultralytics.nn.modules import Concat, Conv, RepConv

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint
from yoloslim.errors import UserError
from yoloslim.models.anchor_specs import build_anchor_model
from yoloslim.models.original_checkpoints import import_checkpoint
from yoloslim.models.yolov7.blocks import MP, SP, SPPCSPC, ImplicitA, ImplicitM
from yoloslim.models.yolov7.head import IDetect
from yoloslim.models.yolov7.model import YOLOv7DetectionModel
from yoloslim.report.metrics import count_params

IMGSZ = 64
COMMON = {Conv: "Conv", Concat: "Concat", MP: "MP", SP: "SP", SPPCSPC: "SPPCSPC", ImplicitA: "ImplicitA",
          ImplicitM: "ImplicitM"}
NAMES = ["circle", "square", "triangle"]


def tiny(seed: int = 0) -> YOLOv7DetectionModel:
    """yolov7-tiny with 3 classes and spread-out BN γ, as after training."""
    torch.manual_seed(seed)
    model = build_anchor_model("yolov7-tiny.yaml", nc=3, verbose=False)
    model.names = dict(enumerate(NAMES))
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.05, 1.0)
        bn.running_mean.uniform_(-0.1, 0.1)
    return model


def outputs(model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0)) if x is None else x
    with torch.no_grad():
        return model.eval()(x)[0]


@pytest.mark.parametrize("name, params", [("yolov7-tiny.yaml", 6_039_342), ("yolov7.yaml", 37_245_102)])
def test_reference_parameter_counts(name: str, params: int) -> None:
    model = build_anchor_model(name, nc=10, verbose=False)
    assert type(model) is YOLOv7DetectionModel and count_params(model) == params
    if name == "yolov7-tiny.yaml":
        acts = {type(m.act) for m in model.modules() if isinstance(m, Conv)}
        assert acts == {nn.LeakyReLU} and model.model[0].act.negative_slope == 0.1
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(bn.eps, bn.momentum) for bn in bns} == {(1e-3, 0.03)}


def _original_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("models", "models.yolo", "models.common")}
    for module, names in (("models.yolo", ("Model", "IDetect")), ("models.common", (*COMMON.values(), "RepConv"))):
        for name in names:
            setattr(modules[module], name, type(name, (nn.Module,), {"__module__": module, "__qualname__": name}))
    return modules


def _original_repconv(ours: RepConv, cls: type) -> nn.Module:
    layer = nn.Module()
    layer.__class__ = cls
    if hasattr(ours, "conv"):  # deploy form: one conv
        layer._modules = OrderedDict(rbr_reparam=ours.conv, act=ours.act)
    else:
        layer._modules = OrderedDict(rbr_identity=None, rbr_dense=nn.Sequential(ours.conv1.conv, ours.conv1.bn),
                                     rbr_1x1=nn.Sequential(ours.conv2.conv, ours.conv2.bn), act=ours.act)
    layer.deploy, layer.groups = hasattr(ours, "conv"), 1
    return layer


def _original_yaml(model: YOLOv7DetectionModel) -> dict:
    """The model dict as the original writes it: no model-wide activation, each Conv row names its own."""
    cfg = {k: copy.deepcopy(model.yaml[k]) for k in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone",
                                                      "head")}
    act = model.yaml.get("activation")
    for row in cfg["backbone"] + cfg["head"]:
        if row[2] == "Conv" and act:
            row[3] = [*row[3], *[None, 1][len(row[3]) - 3:], act]
    return cfg | {"ch": 3}


def _as_original(model: YOLOv7DetectionModel, modules: dict) -> nn.Module:
    original = copy.deepcopy(model)
    for parent in list(original.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RepConv):
                parent._modules[name] = _original_repconv(child, modules["models.common"].RepConv)
    for m in original.modules():
        if type(m) in COMMON:
            m.__class__ = getattr(modules["models.common"], COMMON[type(m)])
        elif isinstance(m, IDetect):
            m.__class__ = modules["models.yolo"].IDetect
            anchors = m._buffers.pop("anchor_wh")
            m._buffers = OrderedDict(anchors=anchors,
                                     anchor_grid=(anchors * m.stride.view(-1, 1, 1)).view(m.nl, 1, m.na, 1, 1, 2))
            m.grid = [torch.zeros(1)] * m.nl
    original.__class__ = modules["models.yolo"].Model
    original.yaml, original.names, original.nc = _original_yaml(model), NAMES, 3
    original.hyp = {"lr0": np.float64(0.01), "loss_ota": 1}
    return original


def write_original(path: Path, model: YOLOv7DetectionModel, bare: bool = False) -> Path:
    """Save like the original train.py: a finished run's dict with the fp16 model, or init.pt's bare fp32 module."""
    modules = _original_modules()
    sys.modules.update(modules)
    try:
        original = _as_original(model, modules)
        ckpt = original if bare else {
            "epoch": -1, "best_fitness": np.array([0.31]), "training_results": "0/9 ...", "model": original.half(),
            "ema": None, "updates": None, "optimizer": None, "wandb_id": None}
        torch.save(ckpt, path)
    finally:
        for name in modules:
            sys.modules.pop(name)
    return path


@pytest.mark.parametrize("name", ["yolov7-tiny.yaml", "yolov7.yaml"])
def test_import_round_trip_of_a_finished_run(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_anchor_model(name, nc=3, verbose=False)
    path = write_original(tmp_path / "best.pt", source)
    assert "models" not in sys.modules
    model = import_checkpoint(path)["model"]
    assert type(model) is YOLOv7DetectionModel and next(model.parameters()).dtype == torch.float32
    assert (outputs(model) - outputs(source.half().float())).abs().max() < 1e-3
    assert model.names == dict(enumerate(NAMES)) and model.yoloslim["imported"]["family"] == "yolov7"


def test_import_of_init_pt_and_of_a_deploy_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_anchor_model("yolov7.yaml", nc=3, verbose=False).eval()
    model = import_checkpoint(write_original(tmp_path / "init.pt", source, bare=True))["model"]
    assert (outputs(model) - outputs(source)).abs().max() < 1e-4  # fp32 file
    deploy = copy.deepcopy(source)
    for m in deploy.modules():
        if isinstance(m, RepConv):
            m.fuse_convs()
            m.forward = m.forward_fuse
    model = import_checkpoint(write_original(tmp_path / "deploy.pt", deploy))["model"]
    assert not any(hasattr(m, "conv1") for m in model.modules() if isinstance(m, RepConv))
    assert (outputs(model) - outputs(source.half().float())).abs().max() < 1e-2


def test_unknown_original_class_is_named_in_one_line(tmp_path: Path) -> None:
    modules = _original_modules()
    modules["models.yolo"].IAuxDetect = type("IAuxDetect", (nn.Module,), {"__module__": "models.yolo",
                                                                         "__qualname__": "IAuxDetect"})
    sys.modules.update(modules)
    try:
        torch.save({"model": modules["models.yolo"].IAuxDetect(), "ema": None}, tmp_path / "w6.pt")
    finally:
        for name in modules:
            sys.modules.pop(name)
    with pytest.raises(UserError, match="models.yolo.IAuxDetect") as e:
        import_checkpoint(tmp_path / "w6.pt")
    assert "\n" not in str(e.value)


def test_reparameterization_folds_repconv_and_implicit_tensors() -> None:
    torch.manual_seed(0)
    model = build_anchor_model("yolov7.yaml", nc=3, verbose=False).eval()
    head = model.model[-1]
    for implicit in (*head.ia, *head.im):
        implicit.implicit.data.normal_(1.0, 0.3)  # far from the identity, so that folding is really tested
    before = outputs(model)
    fused = copy.deepcopy(model).fuse(verbose=False)
    assert not any(isinstance(m, (ImplicitA, ImplicitM)) for m in fused.modules())
    assert all(hasattr(m, "conv") and not hasattr(m, "conv1") for m in fused.modules() if isinstance(m, RepConv))
    assert (outputs(fused) - before).abs().max() < 1e-4 * before.abs().max()


def test_export_matches_pytorch(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from yoloslim.engine.export import export_onnx

    model = tiny()
    path = save_model_checkpoint(model, tmp_path / "tiny.pt")
    result = export_onnx(path, imgsz=IMGSZ)
    assert result.max_abs_diff < 1e-4  # against the fused (reparameterized) model
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - outputs(model, x).numpy()).max() < 1e-4


def test_import_command_names_the_family_and_writes_a_checkpoint_ultralytics_loads(tmp_path: Path, capsys) -> None:
    from ultralytics import YOLO

    from yoloslim.cli import main

    source = tiny()
    path = write_original(tmp_path / "best.pt", source)
    assert main(["import", "--weights", str(path), "--out", str(tmp_path / "model.pt")]) == 0
    assert "imported yolov7 models.yolo.Model (model weights, 3 classes" in capsys.readouterr().out
    loaded = YOLO(str(tmp_path / "model.pt"))
    assert (outputs(loaded.model) - outputs(source.half().float())).abs().max() < 1e-3


def test_info_reports_the_deployed_form(capsys) -> None:
    from yoloslim.cli import main

    assert main(["info", "--weights", "yolov7.yaml", "--imgsz", "64", "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "parameters      37,622,682" in out  # 80 classes, as trained: RepConv branches and implicit tensors
    assert "deployed        36,905,341 parameters" in out  # folded, as export does (the paper's 36.9 M)
