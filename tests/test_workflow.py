"""The steps chained as a user runs them: prune, then finetune distilled from the unpruned teacher."""

from __future__ import annotations

import csv

import pytest

from yoloslim.cli import main

pytestmark = pytest.mark.slow


def test_pruned_student_distils_from_its_unpruned_teacher(trained_yolov8n, shapes_data, tmp_path, capsys):
    from ultralytics import YOLO

    from yoloslim.report.metrics import count_params

    out = tmp_path / "prune"
    assert main(["prune", "--weights", trained_yolov8n, "--speed-up", "1.5", "--imgsz", "64", "--no-latency",
                 "--out", str(out)]) == 0
    pruned_params = count_params(YOLO(str(out / "pruned.pt")).model)
    teacher_params = count_params(YOLO(trained_yolov8n).model)
    assert pruned_params < teacher_params

    assert main(["finetune", "--weights", str(out / "pruned.pt"), "--data", shapes_data, "--teacher",
                 trained_yolov8n, "--logit", "l2", "--feature", "cwd", "--epochs", "1", "--imgsz", "64",
                 "--batch", "8", "--no-plots", "--project", str(tmp_path / "runs"), "--name", "kd"]) == 0
    run = tmp_path / "runs" / "kd"
    with open(run / "results.csv") as f:
        row = next(csv.DictReader(f))
    losses = {k.strip(): float(v) for k, v in row.items() if k.strip().startswith("train/")}
    assert losses["train/logit_l2"] > 0 and losses["train/feat_cwd"] > 0, losses
    student = YOLO(str(run / "weights" / "best.pt")).model
    assert count_params(student) == pruned_params
