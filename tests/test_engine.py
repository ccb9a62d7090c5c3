"""Train → val → info → export on a tiny dataset, through the Python API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from yoloslim.cli import main

pytestmark = pytest.mark.slow


def test_trained_checkpoint_is_fp32_and_loads(trained_yolov8n):
    from ultralytics import YOLO

    ckpt = torch.load(trained_yolov8n, map_location="cpu", weights_only=False)
    assert ckpt["optimizer"] is None, "final checkpoints are stripped of optimizer state"
    assert all(p.dtype == torch.float32 for p in ckpt["model"].parameters())
    assert YOLO(trained_yolov8n).model.model[-1].nc == 3


def test_val_reports_metrics_and_cost(trained_yolov8n, shapes_data, capsys):
    assert main(["val", "--weights", trained_yolov8n, "--data", shapes_data, "--imgsz", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("precision", "recall", "map50", "map50_95", "params", "gflops", "size_mb"):
        assert key in out
    assert 0.0 <= out["map50_95"] <= out["map50"] <= 1.0
    assert out["params"] > 1_000_000


def test_info_json(trained_yolov8n, capsys):
    assert main(["info", "--weights", trained_yolov8n, "--imgsz", "64", "--runs", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["latency_ms"] > 0 and out["latency_torch_ms"] > 0
    assert out["gflops"] == pytest.approx(8.2 * (64 / 640) ** 2, rel=0.1)


def test_export_matches_pytorch(trained_yolov8n, tmp_path):
    from yoloslim.engine.export import export_onnx

    result = export_onnx(trained_yolov8n, imgsz=64, out=tmp_path / "m.onnx")
    assert result.path.is_file()
    assert result.max_abs_diff < 1e-4


def test_script_equals_command(trained_yolov8n, tmp_path):
    """`python val.py` runs the same parser as `yoloslim val`."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "info.py"), "--weights", trained_yolov8n, "--imgsz", "64",
                          "--no-latency", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["params"] > 0


def test_training_flushes_denormals_and_restores_the_default(shapes_data, tmp_path):
    """Denormal values make CPU kernels several times slower; during training they are read as zero."""
    import torch

    from yoloslim.engine.train import train

    tiny = torch.full((4,), 1e-20)  # tiny * tiny is 1e-40, a denormal float32
    seen = []
    train("yolov8n.yaml", shapes_data, epochs=1, imgsz=32, batch=8, project=tmp_path, name="r", plots=False,
          val=False, callbacks=[("on_train_batch_end", lambda _: seen.append(bool((tiny * tiny).any())))])
    assert seen and not any(seen)
    assert (tiny * tiny).all()


def test_an_explicit_omp_num_threads_decides_cpu_training_threads(shapes_data, tmp_path, monkeypatch):
    """ultralytics resets torch to (cores - 1) threads; a user's OMP_NUM_THREADS must win over that."""
    import torch
    from ultralytics.utils import NUM_THREADS

    from yoloslim.engine.train import train

    wanted = 2 if NUM_THREADS == 1 else 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(wanted))
    before = torch.get_num_threads()
    seen = []
    try:
        train("yolov8n.yaml", shapes_data, epochs=1, imgsz=32, batch=8, project=tmp_path, name="r", plots=False,
              val=False, device="cpu", callbacks=[("on_train_batch_end", lambda _: seen.append(torch.get_num_threads()))])
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {wanted}
