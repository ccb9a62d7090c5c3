"""A real distillation run: both terms are logged and the saved student is the student alone."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

from yoloslim.cli import main
from yoloslim.data import generate_dataset
from yoloslim.engine.checkpoint import save_model_checkpoint


@pytest.mark.slow
def test_one_epoch_l2_cwd_logs_both_terms_and_saves_only_the_student(tmp_path: Path) -> None:
    data = generate_dataset("shapes", tmp_path / "shapes", n_train=12, n_val=4, imgsz=64, seed=0, show_progress=False)
    teacher = save_model_checkpoint(DetectionModel("yolov8s.yaml", nc=3, verbose=False), tmp_path / "teacher.pt")
    code = main([
        "distill", "--model", "yolov8n.yaml", "--teacher", str(teacher), "--data", str(data),
        "--logit", "l2", "--feature", "cwd", "--schedule", "linear",
        "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--no-plots",
        "--project", str(tmp_path / "runs"), "--name", "kd",
    ])
    assert code == 0
    run = tmp_path / "runs" / "kd"
    with open(run / "results.csv") as f:
        row = next(csv.DictReader(f))
    for column in ("train/box_loss", "train/logit_l2", "train/feat_cwd"):
        assert float(row[column]) > 0, column

    reference = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    for path in (run / "weights" / "best.pt", run / "weights" / "last.pt"):
        student = YOLO(str(path)).model
        assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in reference.parameters())
        assert student.state_dict().keys() == reference.state_dict().keys()  # no connector weights inside
        assert next(student.parameters()).dtype == torch.float32
        assert student.yoloslim["distill"]["logit"] == "l2"
        assert student.yoloslim["distill"]["teacher_layers"] == [15, 18, 21]


def test_cli_bad_teacher_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n")
    code = main(["distill", "--model", "yolov8n.yaml", "--teacher", str(tmp_path / "nope.pt"), "--data", str(data),
                 "--feature", "cwd", "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope.pt" in err
    assert not (tmp_path / "runs").exists()
