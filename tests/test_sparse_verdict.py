"""The "ready to slim?" verdict: the gap between undefended and defended BN |γ|, the safe ratio, and the
commands that use it (sparse prints it and records it per epoch, prune reads it, vis-bn draws it).

Models are yolov8n with γ set by hand, so where the gap is, and which channels lie below it, is known."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.cli import main
from yoloslim.errors import UserError
from yoloslim.sparsity.verdict import COLUMNS, LAYER_KEEP, NOT_SEPARATED_LINE, judge, judge_model

LOW, HIGH = 0.01, 1.0  # the undefended cluster sits at 0.5–1.5 × LOW, the defended one at 1–1.2 × HIGH
DEFENDED = 0.5  # any |γ| above this belongs to the defended cluster


def yolov8n():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov8n.yaml", nc=3, verbose=False)


def two_clusters(low_share: float = 0.5, between: float = 0.0, whole_low_bn: bool = False):
    """yolov8n (made prunable) whose penalized BNs each put ``low_share`` of their channels in the
    undefended cluster and the rest in the defended one; ``between`` of the channels sit halfway (in
    log) instead, and ``whole_low_bn`` puts every channel of one single-BN group's BN into the middle of
    the undefended cluster (so a cut of the whole cluster would empty that layer)."""
    from yoloslim.sparsity.compare import module_selection

    model = yolov8n()
    selection = module_selection(model)
    modules = dict(model.named_modules())
    g = torch.Generator().manual_seed(0)
    for name in selection.penalized:
        n = modules[name].num_features
        gamma = HIGH * (1 + 0.2 * torch.rand(n, generator=g))
        order = torch.randperm(n, generator=g)
        low, mid = order[:int(low_share * n)], order[int(low_share * n):int((low_share + between) * n)]
        gamma[low] = LOW * (0.5 + torch.rand(len(low), generator=g))
        gamma[mid] = math.sqrt(LOW * HIGH)
        modules[name].weight.data = gamma
    if whole_low_bn:
        lone = next(group.bn_members[0].param for group in selection.groups if len(group.bn_members) == 1)
        bn = modules[lone.removesuffix(".weight")]
        bn.weight.data = LOW * (0.9 + 0.05 * torch.rand(bn.num_features, generator=g))
    return model, selection


def penalized_gammas(model, selection) -> torch.Tensor:
    from yoloslim.sparsity.stats import abs_gammas

    return abs_gammas(model, selection.penalized)


def defended_count(model) -> int:
    return sum(int((m.weight.detach().abs() > DEFENDED).sum()) for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.slow
@pytest.mark.parametrize("between", [0.0, 0.02])
def test_safe_ratio_cuts_only_channels_below_the_gap(between: float) -> None:
    from yoloslim.prune.classic import slim_prune_model

    model, selection = two_clusters(between=between)
    values = penalized_gammas(model, selection)
    verdict = judge_model(model, selection)
    low_share = float((values < 2 * LOW).float().mean())
    assert verdict.separated, verdict
    assert verdict.gap_low < 2 * LOW and verdict.gap_high >= HIGH
    assert low_share - 0.01 <= verdict.safe_ratio <= low_share + between
    cut = values.sort().values[:int(verdict.safe_ratio * len(values))]
    assert float(cut.max()) < verdict.gap_high and float(cut.max()) < DEFENDED
    pruned = slim_prune_model(model, verdict.safe_ratio, imgsz=64).model  # the real global cut
    assert defended_count(pruned) == defended_count(model), "the safe cut removed a defended channel"
    assert verdict.line(1.7) == f"ready: --prune-ratio up to {verdict.safe_ratio:g} (≈ 1.70 x)"


@pytest.mark.slow
def test_a_wholly_undefended_layer_gets_a_layer_keep_instead_of_capping_the_ratio() -> None:
    """Classic slimming refuses to empty a layer: the verdict records the --layer-keep that keeps a sliver."""
    from yoloslim.prune.classic import slim_prune_model

    model, selection = two_clusters(whole_low_bn=True)
    values = penalized_gammas(model, selection)
    verdict = judge_model(model, selection)
    whole_gap = math.floor(100 * float((values < 2 * LOW).float().mean())) / 100
    assert verdict.separated and whole_gap - 0.01 <= verdict.safe_ratio <= whole_gap
    assert verdict.layer_keep == LAYER_KEEP and "--layer-keep 0.01" in verdict.line()
    with pytest.raises(UserError, match="would remove every channel"):
        slim_prune_model(model, verdict.safe_ratio, imgsz=64)
    pruned = slim_prune_model(model, verdict.safe_ratio, layer_keep=verdict.layer_keep, imgsz=64).model
    assert defended_count(pruned) == defended_count(model), "the safe cut removed a defended channel"
    assert judge_model(*two_clusters()).layer_keep is None  # no layer is wholly undefended there


def test_all_equal_gammas_are_not_separated() -> None:
    verdict = judge(torch.full((2000,), 0.7), torch.full((20,), 0.7))
    assert not verdict.separated and verdict.safe_ratio == 0.0 and verdict.gap_ratio == 1.0
    assert verdict.line(2.0) == NOT_SEPARATED_LINE


def test_a_broad_single_cluster_is_not_separated() -> None:
    """Log-normal |γ| with σ = 1 has 5%-bands 1.28x wide at its 10th percentile: wide, but not a gap."""
    values = torch.randn(4000, generator=torch.Generator().manual_seed(0)).exp()
    verdict = judge(values, values.reshape(40, 100).amax(1))
    assert verdict.gap_ratio > 1.2 and not verdict.separated


def test_noise_among_near_zero_gammas_is_not_the_gap() -> None:
    """Half the undefended γ at 1e-9 and half at 1e-4 are 1e5 apart, more than 1e-4 is from the defended
    ones; counted from the floor up, all of them are below the one gap that matters."""
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.full((800,), 1e-9), torch.full((800,), 1e-4), 1 + 0.2 * torch.rand(2400, generator=g)])
    verdict = judge(values, torch.full((10,), 1.2))
    assert verdict.separated and verdict.safe_ratio == 0.4 and verdict.gap_high >= 1.0


def save_with_record(model, selection, path: Path, verdict=None) -> Path:
    from yoloslim.engine.checkpoint import save_model_checkpoint

    sparse = {"method": "slim", "penalized": list(selection.penalized)}
    if verdict is not None:
        sparse["verdict"] = verdict.as_record()
    return save_model_checkpoint(model, path, meta={"sparse": sparse})


@pytest.fixture(scope="module")
def ready_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    model, selection = two_clusters()
    verdict = judge_model(model, selection)
    assert verdict.separated
    return save_with_record(model, selection, tmp_path_factory.mktemp("ready") / "sparse.pt", verdict), \
        verdict.safe_ratio


@pytest.mark.slow
def test_prune_slim_without_ratio_uses_the_recorded_safe_ratio(ready_checkpoint, tmp_path: Path, capsys) -> None:
    path, safe = ready_checkpoint
    out = tmp_path / "out"
    assert main(["prune", "--weights", str(path), "--method", "slim", "--imgsz", "64", "--no-latency",
                 "--out", str(out)]) == 0
    assert f"--prune-ratio {safe:g}: the safe ratio recorded" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["prune_ratio"] == safe and report["target_speed_up"] is None


@pytest.mark.slow
def test_sparse_end_line_gives_the_speed_up_of_the_safe_ratio(ready_checkpoint) -> None:
    from yoloslim.commands.sparse import verdict_line

    path, safe = ready_checkpoint
    line = verdict_line(path)
    assert line.startswith(f"ready: --prune-ratio up to {safe:g} (≈ ") and line.endswith(" x)")
    assert float(line.split("≈ ")[1].split(" ")[0]) > 1.2


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_prune_slim_without_ratio_on_a_checkpoint_without_record(tmp_path: Path, capsys) -> None:
    from yoloslim.engine.checkpoint import save_model_checkpoint

    plain = save_model_checkpoint(yolov8n(), tmp_path / "plain.pt")
    err = one_line_error(capsys, ["prune", "--weights", str(plain), "--method", "slim", "--out", str(tmp_path)])
    assert "records no safe prune ratio" in err and "pass --prune-ratio" in err


def test_prune_slim_without_ratio_on_a_run_that_did_not_separate(tmp_path: Path, capsys) -> None:
    from yoloslim.sparsity.compare import module_selection

    model = yolov8n()
    selection = module_selection(model)
    verdict = judge_model(model, selection)  # an untrained model: every γ is 1
    assert not verdict.separated
    path = save_with_record(model, selection, tmp_path / "early.pt", verdict)
    err = one_line_error(capsys, ["prune", "--weights", str(path), "--method", "slim", "--out", str(tmp_path)])
    assert "train longer or raise --sr" in err and "--prune-ratio" in err


@pytest.mark.slow
def test_vis_bn_marks_the_safe_cut(ready_checkpoint, tmp_path: Path, capsys) -> None:
    path, safe = ready_checkpoint
    out = tmp_path / "overlay.png"
    assert main(["vis-bn", "--weights", str(path), "--out", str(out)]) == 0
    assert f"safe ratio {safe:g}" in capsys.readouterr().out
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_sparse_run_records_the_verdict_per_epoch_and_ends_with_one_line(shapes_data, tmp_path: Path,
                                                                      capsys) -> None:
    from yoloslim.engine.checkpoint import read_checkpoint, yoloslim_meta

    assert main(["sparse", "--weights", "yolov8n.yaml", "--data", shapes_data, "--epochs", "2", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--no-plots", "--project", str(tmp_path), "--name", "s"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    verdicts = [line for line in lines if line.startswith("ready: ") or line == NOT_SEPARATED_LINE]
    assert len(verdicts) == 1 and lines[-1] == verdicts[0]
    with open(tmp_path / "s" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert float(row[COLUMNS["gap"]]) >= 1.0 and 0.0 <= float(row[COLUMNS["safe"]]) < 1.0
    last = read_checkpoint(tmp_path / "s" / "weights" / "last.pt")
    sparse = yoloslim_meta(last)["sparse"]
    assert last["train_args"]["nbs"] == 4, "by default the optimizer steps every batch"
    from yoloslim.sparsity.measured_cut import LOSS_BOUND
    from yoloslim.sparsity.verdict import Verdict

    verdict = Verdict.from_record(sparse["verdict"])
    assert verdict.loss_bound == LOSS_BOUND, "the run ends by measuring the safe ratio and records that verdict"
    assert verdict.safe_ratio == (sparse["measured_cut"]["ratio"] if verdict.separated else 0.0)
    assert (verdicts[0] == NOT_SEPARATED_LINE) == (not verdict.separated)
