"""Segment, pose, OBB and classify models through the workflow: train, sparse, prune, finetune, val, export.

One tiny model per task trains one epoch on its synthetic data (shapes at 64 px); everything after reads
that checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import outputs_in_fresh_process
from yoloslim.cli import main

IMGSZ = 64
MODELS = {"segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml", "obb": "yolov8n-obb.yaml",
          "classify": "yolo11n-cls.yaml"}
TASK_METRIC = {"segment": ("mask_map50_95", "metrics/mAP50-95(M)"), "pose": ("pose_map50_95", "metrics/mAP50-95(P)"),
               "obb": ("map50_95", "metrics/mAP50-95(B)"), "classify": ("top1", "metrics/accuracy_top1")}


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request, tmp_path_factory) -> tuple[str, str, Path]:
    """(task, dataset, best.pt) of the task's model trained one epoch on its synthetic shapes."""
    from yoloslim.data import generate_dataset
    from yoloslim.engine.train import train

    task = request.param
    root = tmp_path_factory.mktemp(task)
    data = str(generate_dataset("shapes", root / "data", n_train=16, n_val=8, imgsz=IMGSZ, task=task,
                                show_progress=False))
    result = train(MODELS[task], data, epochs=1, imgsz=IMGSZ, batch=8, workers=0, plots=False,
                   project=root / "runs", name="base")
    return task, data, result.best


def predictions(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The eval outputs that carry predictions, flattened: what the format fixes, without the feature maps a
    head also returns (whose widths pruning may change)."""
    from yoloslim.prune.trace import tensors_only

    with torch.no_grad():
        out = model.eval()(x)
    if isinstance(out, (list, tuple)) and isinstance(out[-1], dict):
        out = [out[:-1], {k: v for k, v in out[-1].items() if k != "feats"}]
    return tensors_only(out)


def test_one_epoch_reports_the_task_metric(trained) -> None:
    from yoloslim.engine.validate import validate

    task, data, best = trained
    short, column = TASK_METRIC[task]
    rows = list(csv.DictReader((best.parents[1] / "results.csv").open()))
    assert column in {key.strip() for key in rows[0]}
    metrics = validate(best, data, imgsz=IMGSZ, batch=8)
    assert 0.0 <= metrics[short] <= 1.0
    assert ("top5" in metrics) == (task == "classify") and ("map50_95" in metrics) == (task != "classify")


def test_prune_to_2x_keeps_outputs_reloads_and_exports(trained, tmp_path: Path) -> None:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, yoloslim_meta
    from yoloslim.engine.export import export_onnx
    from yoloslim.engine.validate import validate

    task, data, best = trained
    out = tmp_path / "pruned"
    assert main(["prune", "--weights", str(best), "--data", data, "--method", "lamp", "--speed-up", "2.0",
                 "--imgsz", str(IMGSZ), "--batch", "4", "--finetune-epochs", "1", "--no-latency", "--out", str(out)]) == 0
    summary = yoloslim_meta(read_checkpoint(out / "pruned.pt"))["pruned"]
    assert summary["reached"] and 2.0 <= summary["speed_up"] <= 2.1
    base = checkpoint_module(read_checkpoint(best))
    pruned = checkpoint_module(read_checkpoint(out / "pruned.pt"))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in base.parameters()) / 2
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    assert [t.shape for t in predictions(pruned, x)] == [t.shape for t in predictions(base, x)]

    (count, reloaded), = outputs_in_fresh_process([out / "pruned.pt"], x, tmp_path)
    assert count == sum(p.numel() for p in pruned.parameters())
    with torch.no_grad():
        first = pruned.eval()(x)[0]
    assert all(torch.equal(a, b) for a, b in zip(torch.utils._pytree.tree_leaves(first),
                                                    torch.utils._pytree.tree_leaves(reloaded), strict=True))

    finetuned = next(out.rglob("last.pt"))
    assert TASK_METRIC[task][0] in validate(finetuned, data, imgsz=IMGSZ, batch=8)
    exported = export_onnx(out / "pruned.pt", imgsz=IMGSZ, out=tmp_path / "pruned.onnx")
    assert exported.max_abs_diff < 1e-4 * max(1.0, exported.output_scale)  # boxes are in pixels


# One method per mechanism: random scores, BN scales, a growing penalty, the task loss's gradients. Every method
# on every task is in docs/COVERAGE.md (benchmarks/coverage.py --tasks).
MECHANISMS = ("random", "slim", "group_reg", "group_hessian")


def test_each_pruning_mechanism_reaches_2x_with_outputs_kept(trained) -> None:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.prune.api import prune_model
    from yoloslim.prune.methods import METHODS

    task, data, best = trained
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    expected = [t.shape for t in predictions(checkpoint_module(read_checkpoint(best)), x)]
    for method in MECHANISMS:
        result = prune_model(best, method=method, speed_up=2.0, imgsz=IMGSZ, calib_batches=1, log=lambda _: None,
                             data=data if METHODS[method].needs_data else None)
        assert result.reached and 2.0 <= result.speed_up <= 2.1, method
        assert [t.shape for t in predictions(result.model, x)] == expected, method


def test_sparse_training_then_classic_slimming(trained, tmp_path: Path) -> None:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.prune.classic import slim_prune_model
    from yoloslim.sparsity.api import sparse_train

    task, data, best = trained
    run = sparse_train(best, data, sr=1e-2, epochs=1, imgsz=IMGSZ, batch=8, workers=0, plots=False,
                       project=tmp_path, name="sparse", measure_cut=False)
    rows = list(csv.DictReader(run.save_dir.joinpath("results.csv").open()))
    assert TASK_METRIC[task][1] in {key.strip() for key in rows[0]}
    sparse = checkpoint_module(read_checkpoint(run.last))
    result = slim_prune_model(sparse, prune_ratio=0.4, layer_keep=0.01, round_up=8, imgsz=IMGSZ)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    assert [t.shape for t in predictions(result.model, x)] == [t.shape for t in predictions(sparse, x)]
    assert result.params < sum(p.numel() for p in sparse.parameters())


@pytest.mark.parametrize("model, data_task", [("yolov8n-seg.yaml", "detect"), ("yolo11n-cls.yaml", "detect"),
                                              ("yolov8n.yaml", "classify"), ("yolov8n-pose.yaml", "obb")])
def test_a_dataset_of_another_task_is_one_line_naming_both(model: str, data_task: str, tmp_path: Path,
                                                            capsys) -> None:
    from yoloslim.data import generate_dataset
    from yoloslim.engine.tasks import task_of

    data = generate_dataset("shapes", tmp_path / "data", n_train=2, n_val=1, imgsz=IMGSZ, task=data_task,
                            show_progress=False)
    code = main(["train", "--weights", model, "--data", str(data), "--epochs", "1", "--imgsz", str(IMGSZ),
                 "--project", str(tmp_path / "runs")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert task_of(model) in error[0] and data_task in error[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
