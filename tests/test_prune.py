"""Pruning must land in the speed-up window, keep models runnable, respect per-layer limits, and write
checkpoints that plain ultralytics reloads with the same outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.errors import UserError
from yoloslim.prune import api
from yoloslim.prune.api import prune_model
from yoloslim.prune.methods import METHODS
from yoloslim.prune.recalibrate import DEFAULT_RECALIB_BATCHES

IMGSZ = 64


def quiet(_: str) -> None:
    """Swallow planner progress lines."""


def predictions(model: torch.nn.Module) -> torch.Tensor:
    """The decoded predictions (eval mode also returns the head's input features, which pruning changes)."""
    from yoloslim.prune.graph import tensors_only

    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        return tensors_only(model(x))[0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from yoloslim.data import generate_dataset

    out = tmp_path_factory.mktemp("prune-data") / "shapes"
    return generate_dataset("shapes", out, n_train=8, n_val=4, imgsz=IMGSZ, show_progress=False)


@pytest.fixture(scope="module")
def yolov8n_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 3-class yolov8n checkpoint (matches the shapes dataset)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.engine.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    model.args = dict(DEFAULT_CFG_DICT)
    return save_model_checkpoint(model, tmp_path_factory.mktemp("prune-model") / "yolov8n-3.pt")


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_reaches_the_window_and_runs(method: str, yolov8n_pt: Path, shapes: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from yoloslim.models.load import load_module
    from yoloslim.report.metrics import gflops

    warnings: list[str] = []
    monkeypatch.setattr(api, "_warn", warnings.append)
    data = shapes if METHODS[method].needs_data else None
    result = prune_model(yolov8n_pt, method=method, speed_up=1.5, imgsz=IMGSZ, data=data, calib_batches=1, log=quiet)
    assert result.reached, result.note
    assert any("no record of sparse training" in w for w in warnings) == METHODS[method].needs_sparse_training
    assert 1.5 <= result.speed_up <= 1.5 * 1.05
    base = load_module(str(yolov8n_pt))
    assert gflops(base, IMGSZ) / gflops(result.model, IMGSZ) == pytest.approx(result.speed_up, rel=1e-6)
    assert result.params < result.base_params
    assert predictions(result.model).shape == predictions(base).shape


def test_sparse_training_record_silences_the_warning() -> None:
    from yoloslim.engine.checkpoint import record_meta
    from yoloslim.prune.methods import sparse_training_warning

    model = torch.nn.Conv2d(3, 8, 3)
    warning = sparse_training_warning(METHODS["group_slim"], model)
    assert warning and "\n" not in warning
    record_meta(model, sparse={"method": "group_slim"})
    assert sparse_training_warning(METHODS["group_slim"], model) is None
    assert sparse_training_warning(METHODS["lamp"], torch.nn.Conv2d(3, 8, 3)) is None


def test_calibration_gradients_leave_the_model_unchanged(shapes: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.prune.calibration import gradient_statistics

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = gradient_statistics(model, shapes, "squared", batches=1, imgsz=IMGSZ, batch=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert grads["model.0.conv.weight"].shape == model.model[0].conv.weight.shape
    assert grads["model.0.conv.weight"].min() >= 0 and grads["model.0.conv.weight"].sum() > 0


def out_widths(module: torch.nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["yolov8n.yaml", "yolo11n.yaml", "yolov10n.yaml", "yolov5nu.yaml"])
def test_hidden_head_convs_prune_and_prediction_layers_keep_their_width(spec: str) -> None:
    from yoloslim.models.load import load_module

    base = load_module(spec)
    head = f"model.{len(base.model) - 1}"
    result = prune_model(base, speed_up=2.0, imgsz=IMGSZ, log=quiet)
    assert result.reached, result.note
    assert predictions(result.model).shape == predictions(base).shape
    kept = [name for name, reason in result.protected if reason.startswith("prediction layer")]
    assert f"{head}.dfl.conv" in kept and f"{head}.cv2.0.2" in kept and f"{head}.cv3.0.2" in kept
    assert not any(reason.startswith("head") for _, reason in result.protected)
    before, after = out_widths(base), out_widths(result.model)
    assert all(after[name] == before[name] for name in kept)
    hidden = [n for n in before if n.startswith(head + ".") and n not in kept]
    assert sum(after[n] < before[n] for n in hidden) >= len(hidden) // 2, "the hidden head convs stayed whole"


@pytest.mark.slow
def test_rtdetr_decoder_keeps_its_width_and_the_rest_prunes() -> None:
    from yoloslim.models.load import load_module

    base = load_module("rtdetr-l.yaml")
    result = prune_model(base, speed_up=1.5, imgsz=IMGSZ, log=quiet)  # at 64 px the 300 queries' cost caps it
    assert result.reached, result.note
    assert predictions(result.model).shape == predictions(base).shape
    assert dict(result.protected)["model.28"].startswith("head (RTDETRDecoder): decoder")
    decoder = {n: t.shape[0] for n, t in result.model.model[28].named_parameters()}
    assert decoder == {n: t.shape[0] for n, t in base.model[28].named_parameters()}


@pytest.mark.slow
def test_protect_head_keeps_the_whole_head(yolov8n_pt: Path) -> None:
    from yoloslim.models.load import load_module

    base = load_module(str(yolov8n_pt))
    result = prune_model(yolov8n_pt, speed_up=1.5, imgsz=IMGSZ, protect_heads=True, log=quiet)
    assert result.reached and dict(result.protected)["model.22"].startswith("head (Detect): protected whole")
    before, after = out_widths(base), out_widths(result.model)
    assert all(after[n] == w for n, w in before.items() if n.startswith("model.22."))
    assert predictions(result.model).shape == predictions(base).shape


@pytest.mark.slow
def test_same_seed_gives_the_same_architecture(yolov8n_pt: Path) -> None:
    def widths(seed: int) -> list[int]:
        result = prune_model(yolov8n_pt, method="random", speed_up=1.5, imgsz=IMGSZ, seed=seed, log=quiet)
        return [c["after"] for c in result.channels]

    first = widths(0)
    assert widths(0) == first
    assert widths(1) != first


@pytest.mark.slow
def test_per_layer_limit_and_round_to_hold(yolov8n_pt: Path) -> None:
    result = prune_model(yolov8n_pt, speed_up=2.5, imgsz=IMGSZ, max_layer_ratio=0.5, round_to=8, log=quiet)
    changed = [c for c in result.channels if c["after"] != c["before"]]
    assert changed
    for c in changed:
        assert c["after"] >= c["before"] * 0.5, c
        assert c["after"] % 8 == 0, c


@pytest.mark.slow
def test_unreachable_target_keeps_the_best_and_says_so(yolov8n_pt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(api, "_warn", warnings.append)
    result = prune_model(yolov8n_pt, speed_up=20.0, imgsz=IMGSZ, max_layer_ratio=0.5, log=quiet)
    assert not result.reached
    assert 1.5 < result.speed_up < 20.0
    assert any("not reached" in w and f"best reached {result.speed_up:.3f}x" in w for w in warnings), warnings
    assert all(c["after"] >= c["before"] * 0.5 for c in result.channels)


@pytest.mark.slow
@pytest.mark.parametrize("first_aim", [0.9, 1.2], ids=["short-then-continue", "overshoot-then-restart"])
def test_a_missed_first_round_is_corrected(first_aim: float, yolov8n_pt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the first round to land outside the window: the planner must still finish inside it."""
    from yoloslim.prune import planner

    monkeypatch.setattr(planner, "FIRST_AIM", first_aim)
    lines: list[str] = []
    result = prune_model(yolov8n_pt, speed_up=1.5, imgsz=IMGSZ, log=lines.append)
    assert result.reached and 1.5 <= result.speed_up <= 1.575
    assert result.steps == 2 and len(lines) == 3  # two step lines and the summary


@pytest.mark.slow
def test_ignored_modules_keep_their_channels(yolov8n_pt: Path) -> None:
    result = prune_model(yolov8n_pt, speed_up=1.5, imgsz=IMGSZ, ignore=["SPPF", "model.7"], log=quiet)
    assert ("model.9", "ignored by the user") in result.protected and ("model.7", "ignored by the user") in result.protected
    kept = [c for c in result.channels if c["layer"].startswith(("model.9.", "model.7."))]
    assert kept and all(c["after"] == c["before"] for c in kept)
    assert any(c["after"] < c["before"] for c in result.channels)


@pytest.mark.slow
def test_fixed_prune_ratio(yolov8n_pt: Path) -> None:
    result = prune_model(yolov8n_pt, prune_ratio=0.3, imgsz=IMGSZ, round_to=None, log=quiet)
    removed = sum(c["before"] - c["after"] for c in result.channels)
    assert result.target is None and result.speed_up > 1.2
    assert removed > 0.2 * sum(c["before"] for c in result.channels)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "magic"}, "choose one of: " + ", ".join(METHODS)),
        ({"speed_up": 1.0}, "--speed-up must be greater than 1.0"),
        ({"speed_up": 0.5}, "--speed-up must be greater than 1.0"),
        ({"prune_ratio": 0.0}, "--prune-ratio must be between 0 and 1"),
        ({"prune_ratio": 1.0}, "--prune-ratio must be between 0 and 1"),
        ({"method": "group_taylor"}, "pass --data"),
        ({"max_layer_ratio": 1.5}, "--max-layer-ratio"),
    ],
)
def test_bad_settings_fail_with_one_line_before_any_work(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        prune_model("does-not-exist.pt", **settings)
    assert "\n" not in str(info.value)


def test_data_with_another_class_count_is_refused_and_nothing_is_written(shapes: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from yoloslim.cli import main

    out = tmp_path / "out"
    code = main(["prune", "--weights", "yolov8n.yaml", "--data", str(shapes), "--imgsz", str(IMGSZ),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "80 classes" in err and "3" in err and len(err.splitlines()) == 1
    assert not (out / "pruned.pt").exists()


RELOAD = textwrap.dedent("""
    import sys, numpy as np, torch
    from ultralytics import YOLO
    model = YOLO(sys.argv[1])
    net = model.model.float().eval()
    x = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(net(x)[0], sys.argv[3])
    model.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
    print(sum(p.numel() for p in net.parameters()))
""")


@pytest.fixture(scope="module")
def cli_run(yolov8n_pt: Path, shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `yoloslim prune` run with data and a 1-epoch finetune, shared by the checks below."""
    from yoloslim.cli import main

    out = tmp_path_factory.mktemp("prune-cli")
    code = main(["prune", "--weights", str(yolov8n_pt), "--data", str(shapes), "--imgsz", str(IMGSZ),
                 "--speed-up", "1.5", "--batch", "4", "--finetune-epochs", "1", "--out", str(out)])
    assert code == 0
    return out


def assert_reloads_identically(pruned_pt: Path, tmp_path: Path) -> None:
    """Plain ultralytics, in a fresh process, gives the same outputs and parameter count as we do."""
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
    from yoloslim.report.metrics import count_params

    module = checkpoint_module(read_checkpoint(pruned_pt)).eval()
    assert next(module.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = module(x)[0]
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    done = subprocess.run([sys.executable, str(script), str(pruned_pt), str(tmp_path / "x.pt"),
                           str(tmp_path / "y.pt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == count_params(module)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


@pytest.mark.slow
def test_pruned_checkpoint_reloads_in_a_fresh_process_with_identical_outputs(cli_run: Path, tmp_path: Path) -> None:
    from yoloslim.engine.checkpoint import read_checkpoint, yoloslim_meta

    meta = yoloslim_meta(read_checkpoint(cli_run / "pruned.pt"))
    assert meta["pruned"]["method"] == "lamp" and meta["recalibrated"]["batches"] >= 1
    assert_reloads_identically(cli_run / "pruned.pt", tmp_path)


@pytest.mark.slow
def test_report_compares_baseline_pruned_recalibrated_and_finetuned(cli_run: Path) -> None:
    report = json.loads((cli_run / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    pruned_name = f"lamp {report['speed_up']:.2f}x"
    assert names == ["baseline", pruned_name, f"{pruned_name} + BN recalib", f"{pruned_name} + BN recalib finetuned"]
    baseline, pruned, recalibrated, finetuned = report["rows"]
    for row in report["rows"]:
        assert {"params", "gflops", "size_mb", "latency_ms", "map50", "map50_95"} <= row.keys()
    assert pruned["pct_of_baseline"]["gflops"] == pytest.approx(100 / report["speed_up"], abs=0.1)
    assert pruned["params"] == recalibrated["params"] == finetuned["params"] < baseline["params"]
    assert report["method"] == "lamp" and report["reached"] and report["seconds"] > 0
    assert report["recalib_batches"] == DEFAULT_RECALIB_BATCHES
    assert any(p["module"] == "model.22.cv3.0.2" and p["reason"].startswith("prediction layer")
               for p in report["protected"])
    assert any(c["after"] < c["before"] for c in report["channels"])
    markdown = (cli_run / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in names) and "model.22.dfl.conv" in markdown
    assert (cli_run / "channels.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_iterative_run_ends_in_the_window_and_reloads_identically(yolov8n_pt: Path, shapes: Path,
                                                                  tmp_path: Path) -> None:
    from yoloslim.cli import main

    out = tmp_path / "staged"
    code = main(["prune", "--weights", str(yolov8n_pt), "--data", str(shapes), "--imgsz", str(IMGSZ),
                 "--speed-up", "1.5", "--stages", "2", "--stage-epochs", "1", "--recalib", "1", "--batch", "4",
                 "--no-latency", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["reached"] and 1.5 <= report["speed_up"] <= 1.5 * 1.05
    first, second = report["stages"]
    assert first["target"] == pytest.approx(1.5 ** 0.5, abs=1e-3) and first["speed_up"] >= first["target"]
    assert first["map50_95_finetuned"] is not None and second["map50_95_finetuned"] is None
    assert second["speed_up"] == pytest.approx(report["speed_up"], abs=1e-3) and second["params"] < first["params"]
    assert (out / "stage-1" / "finetune" / "weights" / "last.pt").is_file()
    assert "## Stages" in (out / "report.md").read_text()
    assert_reloads_identically(out / "pruned.pt", tmp_path)
