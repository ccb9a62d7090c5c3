"""Any ultralytics training setting as KEY=VALUE words or --cfg; checked before any work; defaults a user expects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.cli import main
from yoloslim.engine.settings import check_settings, parse_words, training_settings
from yoloslim.engine.trainer import KeepModelMixin
from yoloslim.errors import UserError


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_words_are_typed_as_ultralytics_types_them() -> None:
    assert parse_words(["mosaic=0", "cos_lr=True", "hsv_h=0.0", "cache=ram", "close_mosaic", "=", "5"]) == {
        "mosaic": 0, "cos_lr": True, "hsv_h": 0.0, "cache": "ram", "close_mosaic": 5}
    with pytest.raises(UserError, match="not a setting"):
        parse_words(["mosaic"])
    with pytest.raises(UserError, match="given twice"):
        parse_words(["nbs=16", "nbs=32"])


@pytest.mark.parametrize("settings, needles", [
    ({"mosiac": 0}, ("'mosiac'", "mosaic")),
    ({"cos_lr": 1}, ("cos_lr", "bool")),
    ({"epochs": "ten"}, ("epochs", "int")),
    ({"hsv_h": 2.0}, ("hsv_h", "between 0.0 and 1.0")),
    ({"save_dir": "x"}, ("save_dir", "--project")),
])
def test_bad_settings_are_one_line_naming_the_key(settings: dict, needles: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as error:
        check_settings(settings, "settings")
    assert "\n" not in str(error.value)
    for needle in needles:
        assert needle in str(error.value)


def test_cfg_file_and_words_combine_words_winning(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("mosaic: 0.5\nhsv_h: 0.0\n")
    assert training_settings(["mosaic=0"], cfg) == {"mosaic": 0, "hsv_h": 0.0}
    cfg.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        training_settings([], cfg)


def test_misspelled_word_exits_2_before_any_work(capsys, shapes_data: str, tmp_path: Path) -> None:
    one_line_error(capsys, ["train", "--model", "yolov8n.yaml", "--data", shapes_data, "--project",
                            str(tmp_path / "runs"), "mosiac=0"], "'mosiac'", "mosaic")
    one_line_error(capsys, ["finetune", "--weights", "x.pt", "--epochs", "3", "epochs=5"], "given twice")
    one_line_error(capsys, ["sparse", "--data", shapes_data], "--weights")
    assert not (tmp_path / "runs").exists()


def test_nbs_is_a_flag_of_sparse_and_a_word_of_every_training_command(capsys, shapes_data: str) -> None:
    from yoloslim.cli import build_parser
    from yoloslim.commands.run_settings import resolve_run

    for command in ("sparse", "train"):
        args = build_parser().parse_args([command, "--weights", "yolov8n.yaml", "nbs=8"])
        assert resolve_run(args, command).overrides["nbs"] == 8
    sparse = build_parser().parse_args(["sparse", "--weights", "yolov8n.yaml"])
    assert "nbs" not in resolve_run(sparse, "sparse").overrides  # left to sparse_train: nbs = batch
    one_line_error(capsys, ["sparse", "--weights", "yolov8n.yaml", "--data", shapes_data, "--nbs", "8", "nbs=16"],
                   "given twice")
    one_line_error(capsys, ["sparse", "--weights", "yolov8n.yaml", "--data", shapes_data, "--nbs", "0"],
                   "--nbs must be a positive")


class Stop(KeyboardInterrupt):
    """Stops a run as Ctrl-C would."""


@pytest.mark.slow
def test_settings_reach_the_trainer_and_resume_alone_keeps_them(capsys, shapes_data: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Words, --cfg and flags reach ultralytics' args; killed after epoch 1, `train --resume last.pt` finishes
    the run with exactly the settings it started with."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"hsv_h": 0.0, "mosaic": 0.5, "epochs": 7}))
    seen: dict = {}
    original_save = KeepModelMixin.save_model

    def save_then_stop(self) -> bool:
        original_save(self)
        seen.setdefault("args", dict(vars(self.args)))
        if self.epoch == 0:
            raise Stop
        return True

    monkeypatch.setattr(KeepModelMixin, "save_model", save_then_stop)
    run = tmp_path / "runs" / "r"
    argv = ["train", "--model", "yolov8n.yaml", "--data", shapes_data, "--epochs", "2", "--imgsz", "64", "--batch",
            "8", "--workers", "0", "--no-plots", "--project", str(tmp_path / "runs"), "--name", "r", "--cfg",
            str(cfg), "mosaic=0", "cos_lr=True", "close_mosaic=0", "nbs=8"]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    args = seen["args"]
    assert (args["epochs"], args["imgsz"], args["batch"]) == (2, 64, 8)  # typed flags win over --cfg
    assert (args["mosaic"], args["hsv_h"], args["cos_lr"], args["close_mosaic"], args["nbs"]) == (0, 0.0, True, 0, 8)
    original = yaml.safe_load((run / "args.yaml").read_text())
    last = str(run / "weights" / "last.pt")
    one_line_error(capsys, ["train", "--resume", last, "--epochs", "9"], "cannot change epochs")

    assert main(["train", "--resume", last]) == 0
    assert yaml.safe_load((run / "args.yaml").read_text()) == original
    assert not (tmp_path / "runs" / "r2").exists()
    from yoloslim.engine.checkpoint import read_checkpoint

    final = read_checkpoint(last)
    assert final["epoch"] == -1 and final["train_args"]["imgsz"] == 64 and final["train_args"]["mosaic"] == 0
    one_line_error(capsys, ["train", "--resume", last], "nothing to resume")


@pytest.mark.slow
def test_val_takes_the_dataset_the_checkpoint_was_trained_on(trained_yolov8n: str, tmp_path: Path, capsys) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from ultralytics.utils import LOGGER

    from yoloslim.engine.checkpoint import save_model_checkpoint

    said: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LOGGER, "info", lambda message, *a, **k: said.append(str(message)))
        assert main(["val", "--weights", trained_yolov8n, "--imgsz", "64", "--json"]) == 0
    assert len([m for m in said if "no --data given" in m]) == 1
    lost = save_model_checkpoint(DetectionModel("yolov8n.yaml", nc=3, verbose=False), tmp_path / "lost.pt",
                                 train_args={"data": str(tmp_path / "gone" / "data.yaml")})
    for command in ("val", "finetune", "sparse"):
        one_line_error(capsys, [command, "--weights", str(lost)], "--data", "records no dataset")


@pytest.mark.slow
def test_class_count_mismatch_on_finetune_leaves_no_run_folder(trained_yolov8n: str, tmp_path: Path, capsys) -> None:
    from yoloslim.data import generate_dataset

    digits = generate_dataset("digits", tmp_path / "digits", n_train=4, n_val=2, imgsz=64, show_progress=False)
    one_line_error(capsys, ["finetune", "--weights", trained_yolov8n, "--data", str(digits), "--imgsz", "64",
                            "--epochs", "1", "--project", str(tmp_path / "runs")], "3 classes")
    assert not (tmp_path / "runs").exists()


def test_onnxslim_is_installed_for_ultralytics_export() -> None:
    """What ultralytics' ONNX export checks before simplifying; satisfied, it never tries to pip-install."""
    from ultralytics.utils.checks import check_requirements

    assert check_requirements(["onnxslim>=0.1.82"], install=False)
