"""Sparse training end to end: a real 2-epoch yolov8n run at 64 px, its outputs, and the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.cli import main
from yoloslim.data import generate_dataset
from yoloslim.sparsity.callback import PLOT_NAME, SparseTraining
from yoloslim.sparsity.stats import COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sparse_data") / "shapes"
    return generate_dataset("shapes", out, n_train=12, n_val=4, imgsz=64, show_progress=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A never-sparse-trained 3-class yolov8n checkpoint."""
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.engine.checkpoint import save_model_checkpoint

    path = tmp_path_factory.mktemp("baseline") / "baseline.pt"
    return save_model_checkpoint(DetectionModel("yolov8n.yaml", nc=3, verbose=False), path)


@pytest.fixture(scope="module")
def sparse_run(shapes: Path, tmp_path_factory: pytest.TempPathFactory):
    """2 epochs, 3 batches of 4 per epoch, nbs=8 → 2 micro-batches per optimizer step."""
    from yoloslim.sparsity import sparse_train

    counts = {"micro_batches": 0, "penalty_steps": 0}
    original_call, original_batch = SparseTraining.__call__, SparseTraining.on_train_batch_start

    def counting_call(self, trainer):
        counts["penalty_steps"] += 1
        original_call(self, trainer)

    def counting_batch(self, trainer):
        counts["micro_batches"] += 1
        original_batch(self, trainer)

    patch = pytest.MonkeyPatch()
    patch.setattr(SparseTraining, "__call__", counting_call)
    patch.setattr(SparseTraining, "on_train_batch_start", counting_batch)
    try:
        result = sparse_train("yolov8n.yaml", shapes, sr=1e-2, method="slim", epochs=2, imgsz=64, batch=4, nbs=8,
                              warmup_epochs=0, workers=0, plots=False, project=tmp_path_factory.mktemp("runs"),
                              name="sparse")
    finally:
        patch.undo()
    return result, counts


@pytest.mark.slow
def test_run_writes_gamma_plot_and_results_columns(sparse_run) -> None:
    result, _ = sparse_run
    assert (result.save_dir / PLOT_NAME).read_bytes().startswith(PNG_MAGIC)
    with open(result.save_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        values = {c: float(row[c]) for c in COLUMNS.values()}
        assert 0 < values[COLUMNS["mean"]] < 2 and 0 <= values[COLUMNS["small"]] <= 1
        assert 0 < values[COLUMNS["cut50"]] <= values[COLUMNS["cut80"]]
        assert all(math.isfinite(v) for v in values.values())


@pytest.mark.slow
def test_penalty_runs_once_per_optimizer_step_in_a_real_run(sparse_run) -> None:
    _, counts = sparse_run
    assert counts == {"micro_batches": 6, "penalty_steps": 3}


@pytest.mark.slow
def test_checkpoint_records_sparse_training_and_loads_with_plain_ultralytics(sparse_run) -> None:
    from ultralytics import YOLO

    from yoloslim.engine.checkpoint import read_checkpoint, yoloslim_meta

    result, _ = sparse_run
    meta = yoloslim_meta(read_checkpoint(result.best))["sparse"]
    assert {k: meta[k] for k in ("method", "sr", "schedule", "epochs")} == {
        "method": "slim", "sr": 1e-2, "schedule": "linear", "epochs": 2}
    assert len(meta["penalized"]) > 0
    assert len(YOLO(str(result.best)).model.yaml["head"]) > 0


@pytest.mark.slow
def test_vis_bn_overlays_a_sparse_and_a_plain_checkpoint(sparse_run, baseline: Path, tmp_path: Path, capsys) -> None:
    result, _ = sparse_run
    out = tmp_path / "overlay.png"
    assert main(["vis-bn", "--weights", str(baseline), str(result.best), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert "baseline.pt:" in printed and "sparse/best.pt:" in printed


def _one_line_error(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err, err


@pytest.mark.parametrize("flags, expected", [
    (["--sr", "-0.01"], "--sr must be a non-negative"),
    (["--method", "l1"], "unknown --method"),
    (["--sr-schedule", "step"], "unknown --sr-schedule"),
])
def test_bad_sparse_flags_fail_with_one_line(shapes: Path, capsys, flags: list[str], expected: str) -> None:
    _one_line_error(capsys, ["sparse", "--weights", "yolov8n.yaml", "--data", str(shapes), *flags], expected)


def test_checkpoint_without_batchnorm_fails_with_one_line(shapes: Path, tmp_path: Path, capsys) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.engine.checkpoint import save_model_checkpoint

    fused = save_model_checkpoint(DetectionModel("yolov8n.yaml", nc=3, verbose=False).fuse(verbose=False),
                                  tmp_path / "fused.pt")
    _one_line_error(capsys, ["sparse", "--weights", str(fused), "--data", str(shapes)], "no BatchNorm layers")
