"""Loading a checkpoint never runs code from it, and every checkpoint yoloslim writes still loads."""

from __future__ import annotations

import fractions
import os
from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.cli import main
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint
from yoloslim.engine.safe_load import TRUST_ENV
from yoloslim.errors import UserError


class RunsACommand:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class ConstructsAClass:
    """Unpickles as a call of an allowed class's constructor with arguments."""

    def __init__(self, cls: type, *args) -> None:
        self.cls, self.args = cls, args

    def __reduce__(self):
        return self.cls, self.args


@pytest.fixture(scope="module")
def small_model():
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8n.yaml", nc=3, verbose=False)


def crafted(path: Path, model, payload) -> Path:
    torch.save({"model": model, "ema": None, "train_args": {}, "payload": payload}, path)
    return path


def test_a_crafted_checkpoint_is_refused_and_its_payload_never_runs(tmp_path: Path, small_model, capsys) -> None:
    marker = tmp_path / "was-run"
    evil = crafted(tmp_path / "evil.pt", small_model, RunsACommand(f"touch {marker}"))
    for command in (["info", "--weights", str(evil), "--no-latency", "--imgsz", "64"],
                    ["val", "--weights", str(evil), "--data", "d.yaml"],
                    ["finetune", "--weights", str(evil), "--data", "d.yaml"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refused" in err and "system" in err and "--trust-checkpoint" in err
    assert not marker.exists()


def test_a_constructor_call_is_refused_even_for_an_allowed_class(tmp_path: Path, small_model) -> None:
    from ultralytics.nn.autobackend import AutoBackend

    path = crafted(tmp_path / "evil.pt", small_model, ConstructsAClass(AutoBackend, str(tmp_path / "other.pt")))
    with pytest.raises(UserError, match="AutoBackend with arguments") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


class FetchesAnAttribute:
    """Unpickles as ``getattr(obj, name)``, the way a fused layer pickles its forward method."""

    def __init__(self, obj: object, name: str) -> None:
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def test_getattr_reaches_a_layers_forward_and_nothing_else(tmp_path: Path, small_model) -> None:
    fused = small_model.__class__("yolov8n.yaml", nc=3, verbose=False).fuse(verbose=False)
    path = save_model_checkpoint(fused, tmp_path / "fused.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(checkpoint_module(read_checkpoint(path)).eval()(x)[0], fused.eval()(x)[0])
    evil = crafted(tmp_path / "evil.pt", small_model, FetchesAnAttribute(small_model, "load_state_dict"))
    with pytest.raises(UserError, match="getattr"):
        read_checkpoint(evil)


def test_trust_checkpoint_loads_what_the_allowlist_refuses(tmp_path: Path, small_model, capsys) -> None:
    path = crafted(tmp_path / "odd.pt", small_model, fractions.Fraction(1, 3))
    with pytest.raises(UserError, match="fractions.Fraction"):
        read_checkpoint(path)
    assert read_checkpoint(path, trusted=True)["payload"] == fractions.Fraction(1, 3)
    assert main(["info", "--weights", str(path), "--no-latency", "--imgsz", "64", "--trust-checkpoint"]) == 0
    assert TRUST_ENV not in os.environ  # the switch does not outlive the command


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("yaml_name", ["yolov8n.yaml", "yolo11n.yaml", "yolov10n.yaml", "yolo26n.yaml",
                                       "yolov5nu.yaml", "yolov5n-anchor.yaml", "rtdetr-l.yaml"])
def test_checkpoints_of_every_family_load_through_the_allowlist(tmp_path: Path, yaml_name: str) -> None:
    from yoloslim.models.load import build_from_yaml

    model = build_from_yaml(yaml_name, nc=3)
    path = save_model_checkpoint(model, tmp_path / "m.pt")
    loaded = checkpoint_module(read_checkpoint(path))
    assert type(loaded) is type(model) and _same_weights(loaded, model)


def test_pruned_and_sparse_checkpoints_load_here_and_with_plain_ultralytics(tmp_path: Path, small_model) -> None:
    from ultralytics import YOLO

    from yoloslim.prune.api import prune_model
    from yoloslim.prune.graph import prepare_for_pruning

    result = prune_model(small_model, method="group_norm", speed_up=1.5, imgsz=64, log=lambda _: None)
    pruned = save_model_checkpoint(result.model, tmp_path / "pruned.pt", meta={"pruned": result.summary()})
    rewritten = small_model.__class__("yolov8n.yaml", nc=3, verbose=False)
    prepare_for_pruning(rewritten, imgsz=64)  # what sparse training saves: split-free blocks of yoloslim
    sparse = save_model_checkpoint(rewritten, tmp_path / "sparse.pt", meta={"sparse": {"method": "slim"}})
    for path, model in ((pruned, result.model), (sparse, rewritten)):
        assert _same_weights(checkpoint_module(read_checkpoint(path)), model)
        assert _same_weights(YOLO(str(path)).model, model)
