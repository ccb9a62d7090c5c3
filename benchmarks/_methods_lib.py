"""Building blocks of ``benchmarks/methods.py``: the plan, a resumable step cache, latency and the plot.

Kept apart from the orchestration so that the caching can be tested without training anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from yoloslim.prune.methods import METHODS

ALL_METHODS = tuple(METHODS)  # every registered method, in registry order
QUICK_METHODS = ("lamp", "l1", "group_taylor")
DEFAULT_MODEL = "yolov8n.yaml"
LATENCY_SIZES_FIXED = (640,)
LATENCY_BATCHES = (1, 8)


@dataclass(frozen=True)
class Plan:
    """Everything that decides the numbers. Its hash names the cache, so changing any field starts fresh
    rows while the baseline (hashed on its own fields only) is reused."""

    n_train: int = 500
    n_val: int = 100
    imgsz: int = 160
    batch: int = 8
    seed: int = 0
    baseline_epochs: int = 80
    sparse_epochs: int = 8
    finetune_share: float = 0.5  # every row finetunes this share of the baseline's epochs
    finetune_epochs: int | None = None  # instead of the share: this many epochs (e.g. for a --model checkpoint)
    recalib_batches: int = 16  # BN recalibration after every planner prune (0 = off)
    stages: int = 3  # iterative rows: prunes to reach the target, finetuning in between
    iterative_methods: int = 3  # lamp and the best other one-shot methods, pruned iteratively too
    sr: float = 1e-2
    speed_up: float = 2.0
    classic_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    calib_batches: int = 4
    latency_runs: int = 20
    latency_threads: int = 1  # one ORT thread: steadier medians on a shared machine than "all cores"
    methods: tuple[str, ...] = ALL_METHODS
    model: str | None = None  # None: yolov8n.yaml; a yaml is trained for baseline_epochs, a checkpoint is used as is
    data: str | None = None  # None: synthesize digits (n_train, n_val, imgsz, seed); else a data.yaml
    train_settings: tuple[tuple[str, Any], ...] | None = None  # ultralytics settings over the recipe, every run

    @classmethod
    def quick(cls) -> "Plan":
        return cls(n_train=96, n_val=32, imgsz=96, baseline_epochs=10, sparse_epochs=2, finetune_epochs=2,
                   stages=2, iterative_methods=1, classic_ratios=(0.3, 0.5), calib_batches=1, latency_runs=10,
                   methods=QUICK_METHODS)

    def with_methods(self, methods: tuple[str, ...]) -> "Plan":
        return replace(self, methods=methods)

    def finetune_budget(self, baseline_epochs: int | None) -> int:
        """Epochs every row gets after pruning (iterative rows: in total, stages included)."""
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        if baseline_epochs is None:
            raise ValueError("the baseline's epochs are unknown")
        return max(1, round(baseline_epochs * self.finetune_share))

    def stage_epochs(self, budget: int) -> tuple[int, int]:
        """(epochs between stages, epochs after the last stage), summing to ``budget`` when it allows."""
        between = max(1, budget // (self.stages + 1))
        return between, max(1, budget - (self.stages - 1) * between)

    @property
    def model_name(self) -> str:
        path = Path(self.model or DEFAULT_MODEL)
        return f"{path.parent.parent.name}/{path.stem}" if path.stem in ("best", "last") else path.stem  # run/weights/

    @property
    def data_name(self) -> str:
        return "synthetic digits" if self.data is None else Path(self.data).name

    def baseline_key(self) -> str:
        return "baseline-" + config_hash({k: getattr(self, k) for k in ("n_train", "n_val", "imgsz", "batch", "seed",
                                                                      "baseline_epochs", "model", "data",
                                                                      "train_settings")})

    def rows_key(self) -> str:
        """Rows depend on every field except which methods are selected (adding one reuses the rest)."""
        fields = {k: v for k, v in asdict(self).items() if k != "methods"}
        return "rows-" + config_hash(fields)


def config_hash(config: dict[str, Any]) -> str:
    """Unset (None) fields are left out, so caches written before a field existed keep their names."""
    config = {k: v for k, v in config.items() if v is not None}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def write_json(path: Path, value: Any) -> None:
    from yoloslim.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode())


class StepCache:
    """One JSON file per finished step under ``folder``: a step is computed once, and an interrupted
    run picks up after the last step that finished (a half-done step leaves no file). Each file also
    keeps the seconds its step took, so the total compute time survives resuming."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.seconds: dict[str, float] = {}  # steps used by this run -> seconds they took when computed

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get_or_run(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.path(key)
        if path.is_file():
            stored = json.loads(path.read_text())
        else:
            started = time.perf_counter()
            stored = {"value": compute()}
            stored["seconds"] = round(time.perf_counter() - started, 1)
            write_json(path, stored)
        self.seconds[key] = stored["seconds"]
        return stored["value"]


def latencies(weights: Path, train_imgsz: int, runs: int, threads: int) -> dict[str, float]:
    """ONNX Runtime CPU medians after warm-up, at the training size and 640, batch 1 and 8.
    ``latency_ms`` (training size, batch 1) is the table's Inference Time column."""
    from yoloslim.engine.export import export_onnx
    from yoloslim.report.metrics import onnx_latency_ms

    out = {}
    with tempfile.TemporaryDirectory(prefix="yoloslim-methods-") as tmp:
        for imgsz in (train_imgsz, *LATENCY_SIZES_FIXED):
            for batch in LATENCY_BATCHES:
                onnx_file = export_onnx(weights, imgsz=imgsz, out=Path(tmp) / "model.onnx", check=False,
                                        batch=batch).path
                out[f"latency_{imgsz}_b{batch}_ms"] = onnx_latency_ms(onnx_file, imgsz, batch=batch, runs=runs,
                                                                        threads=threads)
    out["latency_ms"] = out[f"latency_{train_imgsz}_b1_ms"]
    return out


def latency_table(rows: list[dict[str, Any]], train_imgsz: int) -> str:
    sizes = (train_imgsz, *LATENCY_SIZES_FIXED)
    keys = [(s, b) for s in sizes for b in LATENCY_BATCHES]
    head = "| model | " + " | ".join(f"{s} px batch {b}" for s, b in keys) + " |"
    lines = [head, "|" + "---|" + "---:|" * len(keys)]
    for row in rows:
        cells = [f"{row[f'latency_{s}_b{b}_ms']:.1f} ms" if f"latency_{s}_b{b}_ms" in row else "–" for s, b in keys]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tool_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | speed-up reached | prune seconds | mAP50-95 right after pruning | after BN recalibration | "
             "finetune epochs | finetune seconds | pruned architecture (hash) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        prune = row.get("prune") or {"speed_up": 1.0, "seconds": 0.0}  # the unpruned control
        cells = [f"{row[key]:.3f}" if row.get(key) is not None else "–"
                 for key in ("map50_95_before_finetune", "map50_95_recalibrated")]
        lines.append(f"| {row['name']} | {prune['speed_up']:.3f}x | {prune['seconds']:.1f} | {' | '.join(cells)} | "
                     f"{row['train_epochs']} | {row['train_seconds']:.0f} | `{row['architecture']}` |")
    return "\n".join(lines)


def stages_table(rows: list[dict[str, Any]]) -> str:
    """Speed-up and mAP50-95 after each stage of the iterative rows."""
    lines = ["| model | stage | speed-up | params | mAP50-95 after pruning (+ BN recalibration) | "
             "after the stage's finetune |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        for stage in row.get("stages", []):
            tuned = stage["map50_95_finetuned"]
            lines.append(f"| {row['name']} | {stage['stage']} | {stage['speed_up']:.3f}x | {stage['params']:,} | "
                         f"{stage['map50_95_pruned']:.3f} | {'–' if tuned is None else f'{tuned:.3f}'} |")
    return "\n".join(lines)


def sparse_vs_normal_table(control: dict[str, Any]) -> str:
    ratios = [r["ratio"] for r in control["normal"]["rows"]]
    head = "| continuation | median \\|γ\\| | \\|γ\\| < 0.1 | " + " | ".join(
        "unpruned" if r == 0 else f"ratio {r:g}" for r in ratios) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(ratios)]
    for kind in ("normal", "sparse"):
        c = control[kind]
        cells = [f"{r['map50']:.3f} / {r['map50_95']:.3f}" for r in c["rows"]]
        lines.append(f"| {kind} | {c['gamma_median']:.3f} | {100 * c['gamma_share_below_0.1']:.1f}% | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], baseline: dict[str, Any], path: Path, title: str) -> None:
    """mAP50-95 against GFLOPs, one marker per row (baseline as a star), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^v<>pPXhH8d*"
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(baseline["gflops"], baseline["map50_95"], marker="*", s=220, color="black", label=baseline["name"])
    for i, row in enumerate(rows):
        ax.scatter(row["gflops"], row["map50_95"], marker=markers[i % len(markers)], s=70, label=row["name"])
    ax.set_xlabel(f"GFLOPs at {baseline.get('imgsz', '')} px")
    ax.set_ylabel("mAP50-95 (val)")
    ax.set_title(f"{title}: accuracy vs cost per pruning method")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(staged, dpi=120)
    plt.close(fig)
    os.replace(staged, path)
