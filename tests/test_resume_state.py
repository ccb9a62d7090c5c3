"""Killed after its first epoch and resumed with `--resume last.pt` alone, a run continues exactly: same
settings (args.yaml unchanged), same distillation connectors and group_reg penalty state as at the kill."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
import yaml

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.cli import main
from yoloslim.engine.checkpoint import read_checkpoint
from yoloslim.engine.trainer import TRAINING_STATE_KEY, KeepModelMixin

pytestmark = pytest.mark.slow
COMMON = ["--epochs", "2", "--imgsz", "64", "--batch", "8", "--workers", "0", "--no-plots", "close_mosaic=0"]


class Killed(KeyboardInterrupt):
    """Ends a run right after its first checkpoint, as Ctrl-C would."""


def same(a, b) -> bool:
    """Deep equality of nested training state (tensors compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture
def killed_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Patches every trainer to save, keep a copy of what it saved as training state, and die — once."""
    saved: dict = {}
    original = KeepModelMixin.save_model

    def save_then_die(self) -> bool:
        original(self)
        if not saved:
            saved.update(copy.deepcopy(self.training_state))
            raise Killed
        return True

    monkeypatch.setattr(KeepModelMixin, "save_model", save_then_die)
    return saved


def restored(monkeypatch: pytest.MonkeyPatch, cls: type) -> dict:
    """Record the state ``cls.load_state`` leaves behind when the resumed run hands it back."""
    seen: dict = {}
    original = cls.load_state

    def load_and_record(self, state) -> None:
        original(self, state)
        seen["state"] = copy.deepcopy(self.state())
        seen["self"] = self

    monkeypatch.setattr(cls, "load_state", load_and_record)
    return seen


def resume_alone(run: Path, command: str) -> dict:
    """Resume with nothing but last.pt; return args.yaml from before and after."""
    last = run / "weights" / "last.pt"
    assert TRAINING_STATE_KEY in read_checkpoint(last)
    assert TRAINING_STATE_KEY not in read_checkpoint(run / "weights" / "best.pt")  # best.pt stays a detector
    before = yaml.safe_load((run / "args.yaml").read_text())
    assert main([command, "--resume", str(last)]) == 0
    after = yaml.safe_load((run / "args.yaml").read_text())
    final = read_checkpoint(last)
    assert final["epoch"] == -1 and TRAINING_STATE_KEY not in final
    return {"before": before, "after": after}


def test_group_reg_sparse_training_resumes_with_its_penalty_state(trained_yolov8n: str, shapes_data: str,
                                                                   tmp_path: Path, killed_after_first_epoch: dict,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from yoloslim.sparsity.callback import SparseTraining

    seen = restored(monkeypatch, SparseTraining)
    assert main(["sparse", "--weights", trained_yolov8n, "--data", shapes_data, "--method", "group_reg", "--sr",
                 "0.02", "--clip", *COMMON, "--project", str(tmp_path), "--name", "s"]) == 130
    at_kill = killed_after_first_epoch["sparse"]
    assert at_kill["steps"] > 0 and len(at_kill["history"]) == 1
    assert any((g > 1).any() for g in at_kill["penalty"]["growth"])  # it had grown after the first epoch

    assert main(["distill", "--resume", str(tmp_path / "s" / "weights" / "last.pt")]) == 2  # not a distill run
    assert "yoloslim sparse --resume" in capsys.readouterr().err
    yamls = resume_alone(tmp_path / "s", "sparse")
    assert yamls["after"] == yamls["before"]
    assert same(seen["state"], at_kill)
    extension = seen["self"]
    assert (extension.sr, extension.penalty.name, extension.clip) == (0.02, "group_reg", 10.0)


def test_a_sparse_run_resumes_with_the_gamma_lr_it_was_trained_with(trained_yolov8n: str, shapes_data: str,
                                                                      tmp_path: Path, killed_after_first_epoch: dict,
                                                                      capsys) -> None:
    """Its optimizer state holds the γ group or not; a run recorded before --gamma-lr-scale existed has none."""
    from yoloslim.commands.run_settings import RECORD
    from yoloslim.engine.checkpoint import META_ATTR, yoloslim_meta

    assert main(["sparse", "--weights", trained_yolov8n, "--data", shapes_data, "--gamma-lr-scale", "1", *COMMON,
                 "--project", str(tmp_path), "--name", "s"]) == 130
    last = tmp_path / "s" / "weights" / "last.pt"
    capsys.readouterr()
    assert main(["sparse", "--resume", str(last), "--gamma-lr-scale", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sparse-trained with --gamma-lr-scale 1, not 6" in err, err

    older = read_checkpoint(last)  # as the last.pt of a yoloslim without --gamma-lr-scale
    del older[TRAINING_STATE_KEY][RECORD]["settings"]["gamma_lr_scale"]
    for module in filter(None, (older.get("model"), older.get("ema"))):
        getattr(module, META_ATTR)["sparse"].pop("gamma_lr_scale", None)
    assert "gamma_lr_scale" not in yoloslim_meta(older)["sparse"]
    torch.save(older, last)
    resume_alone(tmp_path / "s", "sparse")  # its optimizer state loads: one lr for every weight, as it was trained


def test_distilled_finetune_resumes_with_its_connectors(trained_yolov8n: str, shapes_data: str, tmp_path: Path,
                                                        killed_after_first_epoch: dict,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.distill.callback import Distiller
    from yoloslim.engine.checkpoint import save_model_checkpoint

    teacher = save_model_checkpoint(DetectionModel("yolov8s.yaml", nc=3, verbose=False), tmp_path / "teacher.pt")
    seen = restored(monkeypatch, Distiller)
    assert main(["finetune", "--weights", trained_yolov8n, "--data", shapes_data, "--teacher", str(teacher),
                 "--feature", "cwd", *COMMON, "--project", str(tmp_path), "--name", "ft"]) == 130
    at_kill = killed_after_first_epoch["distill"]
    assert len(at_kill["modules"]) > 0 and at_kill["optimizer"]["state"]  # trained connectors, stepped optimizer

    yamls = resume_alone(tmp_path / "ft", "finetune")
    assert yamls["after"] == yamls["before"]
    assert same(seen["state"], at_kill)
    assert seen["self"].config.feature == "cwd" and seen["self"].config.teacher == str(teacher)
    with open(tmp_path / "ft" / "results.csv") as f:
        columns = [c.strip() for c in next(csv.reader(f))]
    assert "train/feat_cwd" in columns and not [c for c in columns if c.startswith("val/feat")]
