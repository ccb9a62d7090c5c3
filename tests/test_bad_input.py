"""Every foreseeable mistake gets one line on stderr and exit code 2, and writes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from yoloslim.cli import main


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_missing_checkpoint(capsys, tmp_path):
    code, err = run_cli(["info", "--weights", str(tmp_path / "nope.pt"), "--no-latency"], capsys)
    assert_one_line_error(code, err, "not found")


def test_text_file_renamed_pt(capsys, tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_text("this is not a checkpoint")
    code, err = run_cli(["info", "--weights", str(fake), "--no-latency"], capsys)
    assert_one_line_error(code, err, "not a readable PyTorch checkpoint")


def test_unknown_yaml(capsys):
    code, err = run_cli(["info", "--weights", "yolov99z.yaml", "--no-latency"], capsys)
    assert_one_line_error(code, err, "unknown model yaml")


def test_data_yaml_with_wrong_paths(capsys, tmp_path):
    bad = tmp_path / "data.yaml"
    bad.write_text(yaml.safe_dump({"path": str(tmp_path / "missing"), "train": "images/train",
                                   "val": "images/val", "names": {0: "a"}}))
    code, err = run_cli(["train", "--model", "yolov8n.yaml", "--data", str(bad), "--epochs", "1",
                         "--project", str(tmp_path / "runs")], capsys)
    assert_one_line_error(code, err, "does not exist")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_class_count_mismatch(capsys, tmp_path, trained_yolov8n):
    from yoloslim.data import generate_dataset

    digits = generate_dataset("digits", tmp_path / "digits", n_train=4, n_val=2, imgsz=64, show_progress=False)
    code, err = run_cli(["val", "--weights", trained_yolov8n, "--data", str(digits), "--imgsz", "64"], capsys)
    assert_one_line_error(code, err, "3 classes", "10")
    code, err = run_cli(["train", "--model", trained_yolov8n, "--data", str(digits), "--imgsz", "64",
                         "--epochs", "1", "--project", str(tmp_path / "runs")], capsys)
    assert_one_line_error(code, err, "3 classes")
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_cli_exit_code_in_subprocess(tmp_path):
    out = subprocess.run([sys.executable, "-m", "yoloslim", "info", "--weights", str(tmp_path / "x.pt")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("yoloslim info: error:")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["yolov8n-world.yaml", "yoloe-11n-seg.yaml"])
def test_open_vocabulary_model_is_refused_before_anything_is_built(capsys, tmp_path, model):
    code, err = run_cli(["prune", "--weights", model, "--imgsz", "64", "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, model, "open-vocabulary")
    assert not (tmp_path / "out").exists()


def test_yaml_with_downloaded_backbone_weights_is_refused_and_builds_with_weights_none(capsys, tmp_path, monkeypatch):
    import ultralytics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache: the weights would download
    code, err = run_cli(["info", "--weights", "yolo11-cls-resnet18.yaml", "--no-latency"], capsys)
    assert_one_line_error(code, err, "resnet18", "never downloads", str(tmp_path / "torch-home"))

    shipped = next((__import__("pathlib").Path(ultralytics.__file__).parent / "cfg").rglob("yolo11-cls-resnet18.yaml"))
    local = tmp_path / "resnet18-random.yaml"
    local.write_text(shipped.read_text().replace("resnet18, DEFAULT,", "resnet18, None,"))
    assert "None" in local.read_text()
    assert main(["info", "--weights", str(local), "--no-latency"]) == 0
