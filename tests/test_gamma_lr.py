"""--gamma-lr-scale: the penalized γ get their own optimizer group at K x the lr, through warm-up and decay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.data import generate_dataset
from yoloslim.sparsity.gamma_lr import GROUP_NAME, split_gamma_group


def test_split_moves_exactly_the_named_parameters_at_the_scaled_lr() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight], "lr": 0.01, "param_group": "weight"},
                                   {"params": [model[1].weight, model[2].weight], "lr": 0.002, "param_group": "bn"}])
    assert split_gamma_group(optimizer, model, ["1.weight"], 4.0) == 1
    groups = {g["param_group"]: g for g in optimizer.param_groups}
    assert [p is model[1].weight for p in groups[GROUP_NAME]["params"]] == [True]
    assert groups[GROUP_NAME]["lr"] == pytest.approx(0.008) and groups[GROUP_NAME]["weight_decay"] == 0.01
    assert [p is model[2].weight for p in groups["bn"]["params"]] == [True] and groups["bn"]["lr"] == 0.002


@pytest.mark.slow
def test_penalized_gammas_keep_k_times_the_lr_through_warm_up_and_decay(tmp_path: Path) -> None:
    from yoloslim.sparsity import sparse_train

    data = generate_dataset("shapes", tmp_path / "data", n_train=12, n_val=4, imgsz=64, show_progress=False)
    seen: list[tuple[float, float, float]] = []

    def record(trainer) -> None:
        groups = {g["param_group"]: g for g in trainer.optimizer.param_groups}
        seen.append((groups[GROUP_NAME]["lr"], groups["bn"]["lr"], groups["weight"]["lr"]))

    result = sparse_train("yolov8n.yaml", data, sr=1e-2, epochs=2, imgsz=64, batch=4, warmup_epochs=1, workers=0,
                          plots=False, project=tmp_path / "runs", name="k4", gamma_lr_scale=4.0, measure_cut=False,
                          callbacks=[("on_train_batch_end", record)])
    assert len(seen) == 6 and len({bn for _, bn, _ in seen}) > 2  # warm-up then decay changed the lr
    for penalized, bn, weight in seen:
        assert penalized == pytest.approx(4 * bn) and bn == pytest.approx(weight)
    from yoloslim.engine.checkpoint import checkpoint_module, model_meta, read_checkpoint

    assert model_meta(checkpoint_module(read_checkpoint(result.last)))["sparse"]["gamma_lr_scale"] == 4.0


def test_a_non_positive_scale_is_one_line(capsys, tmp_path: Path) -> None:
    from yoloslim.cli import main

    data = generate_dataset("shapes", tmp_path / "data", n_train=2, n_val=1, imgsz=64, show_progress=False)
    code = main(["sparse", "--weights", "yolov8n.yaml", "--data", str(data), "--gamma-lr-scale", "0"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "--gamma-lr-scale" in error[0]
