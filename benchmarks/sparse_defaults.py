"""Which sparse-training defaults separate the channels the loss does not defend, in a short run.

    OMP_NUM_THREADS=2 python benchmarks/sparse_defaults.py [--quick] [--methods-out DIR] [--out DIR]
                                                           [--optimizers auto SGD AdamW@0.002] [--nbs batch 64]
                                                           [--sr 1e-3 1e-2 3e-2] [--gamma-lr-scales 1 4]
                                                           [--seeds 0 1 2]
                                                           [--share 0.1] [--data D]

The digits benchmark's trained baseline (from ``benchmarks/methods.py``'s cache in ``--methods-out``; trained
there, with its plan, when missing) is sparse-trained for ``--share`` of its epochs once per grid cell: every
optimizer × nominal batch × sr × γ lr scale, everything else at `yoloslim sparse`'s defaults. ``auto`` is the current
default (ultralytics picks AdamW and its lr); ``NAME@LR`` fixes the learning rate (``AdamW@0.002`` is the
methods benchmark's recipe); ``nbs batch`` steps the optimizer every batch, 64 is ultralytics' own; a γ lr
scale K gives the penalized γ K × that lr (``--gamma-lr-scale``), the rest of the model keeping it; ``--seeds``
repeats each cell with other training seeds (the sparse run's shuffling and augmentation), to see how much of
a difference between cells is run-to-run noise. Per cell,
on the run's last.pt (the checkpoint the run's last line judges): the |γ| gap, the measured safe ratio
(:mod:`yoloslim.sparsity.measured_cut`, what `yoloslim sparse` records at the end of a run), mAP50-95 of the
sparse model, and mAP50-95 right after classic slimming (no BN recalibration, no finetuning) at the safe ratio
with the --layer-keep and --round-up it was measured with (what a bare ``prune --method slim`` does with the
recorded ratio) and at 0.5 with ``--round-up 8 --layer-keep 0.01``, each against the baseline's. Every cell is cached as JSON when it finishes, so re-running resumes. Writes
``sparse_defaults.md`` and ``sparse_defaults.json`` to ``--out``. ``--quick`` is a smoke test on the methods
benchmark's quick plan: its numbers say nothing.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods_lib import Plan, StepCache, config_hash, write_json  # noqa: E402
from yoloslim.report.machine import machine_info  # noqa: E402

OPTIMIZERS = ("auto", "SGD", "AdamW@0.002")
NOMINAL_BATCHES = ("batch", "64")
SRS = (1e-3, 1e-2, 3e-2)
SHARE = 0.1  # sparse epochs as a share of the baseline's (the 10–25%: the short end)
FIXED_RATIO = 0.5
FIXED_ROUND_UP = 8
FIXED_LAYER_KEEP = 0.01


def log(text: str) -> None:
    print(f"[sparse-defaults {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True)
class Cell:
    optimizer: str  # an ultralytics optimizer name, optionally NAME@LR
    nbs: str  # "batch" or a number of images
    sr: float
    gamma_lr_scale: float = 1.0
    seed: int = 0  # the sparse run's training seed (the baseline keeps the plan's)

    @property
    def optimizer_name(self) -> str:
        return self.optimizer.split("@")[0]

    @property
    def lr0(self) -> float | None:
        return float(self.optimizer.split("@")[1]) if "@" in self.optimizer else None

    def nominal_batch(self, batch: int) -> int:
        return batch if self.nbs == "batch" else int(self.nbs)

    @property
    def key(self) -> str:
        scaled = f"-gamma{self.gamma_lr_scale:g}" if self.gamma_lr_scale != 1.0 else ""  # 1: the cached cells' keys
        seeded = f"-seed{self.seed}" if self.seed else ""  # likewise seed 0, the plan's
        return f"sparse-{self.optimizer}-nbs{self.nbs}-sr{self.sr:g}{scaled}{seeded}"


class StepCounter:
    """Counts optimizer steps (yoloslim's trainers fire this event once per step, warm-up included)."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, trainer) -> None:
        self.steps += 1


def finite(value: Any) -> Any:
    """JSON has no infinity: an infinite contrast (the median band is empty) is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class Grid:
    def __init__(self, plan: Plan, methods_out: Path, out: Path, share: float) -> None:
        from methods import Benchmark

        from yoloslim.sparsity.defaults import SPARSE_DEFAULTS

        self.plan = plan
        self.bench = Benchmark(plan, methods_out)
        self.out = out.resolve()
        self.epochs = max(1, round(plan.baseline_epochs * share))
        self.steps = StepCache(self.out / "cache" / ("grid-" + config_hash(  # what cells do not set themselves
            {"baseline": plan.baseline_key(), "epochs": self.epochs, "methods_out": str(methods_out.resolve()),
             "schedule": SPARSE_DEFAULTS.schedule, "method": SPARSE_DEFAULTS.method})))
        self.data: Path | None = None
        self.baseline = ""

    def prepare(self) -> dict[str, Any]:
        from yoloslim.engine.validate import validate

        p = self.plan
        self.data = self.bench.data = self.bench.dataset()
        self.baseline = self.bench.baseline()
        return self.steps.get_or_run("baseline", lambda: {
            "weights": self.baseline, **validate(self.baseline, self.data, imgsz=p.imgsz, batch=p.batch)})

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        """The cell's sparse run (cached), judged by the current verdict code, and its classic cuts (cached per
        verdict: a new verdict rule re-judges the stored last.pt without training again)."""
        from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
        from yoloslim.engine.trainer import BEFORE_OPTIMIZER_STEP
        from yoloslim.engine.validate import validate
        from yoloslim.prune.classic import slim_prune_model
        from yoloslim.sparsity.api import sparse_train
        from yoloslim.sparsity.compare import module_selection
        from yoloslim.sparsity.measured_cut import LOSS_BOUND, ROUND_UP, MeasuredCut, measure_model
        from yoloslim.sparsity.stats import abs_gammas
        from yoloslim.sparsity.verdict import judge_model, with_measured_cut

        p = self.plan

        def train() -> dict[str, Any]:
            log(f"{cell.key}: sparse training {self.epochs} epochs")
            started, counter = time.perf_counter(), StepCounter()
            result = sparse_train(self.baseline, self.data, sr=cell.sr, epochs=self.epochs, imgsz=p.imgsz,
                                  batch=p.batch, optimizer=cell.optimizer_name, nbs=cell.nominal_batch(p.batch),
                                  **({"lr0": cell.lr0} if cell.lr0 is not None else {}),
                                  gamma_lr_scale=cell.gamma_lr_scale,
                                  seed=cell.seed, plots=False, project=self.out / "runs", name=cell.key, exist_ok=True,
                                  callbacks=[(BEFORE_OPTIMIZER_STEP, counter)], measure_cut=False)
            seconds = time.perf_counter() - started
            args = read_checkpoint(result.last).get("train_args") or {}
            return {**asdict(cell), "optimizer_used": args.get("optimizer"), "lr0_used": args.get("lr0"),
                    "epochs": self.epochs, "optimizer_steps": counter.steps, "weights": str(result.last),
                    "sparse_seconds": round(seconds, 1),
                    "sparse": validate(result.last, self.data, imgsz=p.imgsz, batch=p.batch)}

        row = dict(self.steps.get_or_run(cell.key, train))
        module = checkpoint_module(read_checkpoint(row["weights"])).float().eval()
        selection = module_selection(module)
        verdict = judge_model(module, selection)

        def measure() -> dict[str, Any]:
            return measure_model(module, self.data, p.imgsz, p.batch, verdict.shortcut).as_record()

        measured = self.steps.get_or_run(f"{cell.key}-measured-bound{LOSS_BOUND:g}-up{ROUND_UP}", measure)
        verdict = with_measured_cut(verdict, MeasuredCut(**measured), abs_gammas(module, selection.penalized))
        row["verdict"] = {k: finite(v) for k, v in asdict(verdict).items()}
        row["measured_cut"] = measured

        def cut(ratio: float, **options: Any) -> dict[str, Any]:
            pruned = slim_prune_model(module, ratio, imgsz=p.imgsz, **options)
            return {"ratio": ratio, "speed_up": pruned.speed_up,
                    **validate(pruned.model, self.data, imgsz=p.imgsz, batch=p.batch)}

        if verdict.separated:
            row["at_safe_ratio"] = self.steps.get_or_run(
                f"{cell.key}-cut-{verdict.safe_ratio:g}-keep{verdict.layer_keep}-up{verdict.round_up}",
                lambda: cut(verdict.safe_ratio, layer_keep=verdict.layer_keep, round_up=verdict.round_up))
        row["at_fixed_ratio"] = self.steps.get_or_run(
            f"{cell.key}-cut-{FIXED_RATIO:g}-up{FIXED_ROUND_UP}-keep{FIXED_LAYER_KEEP}",
            lambda: cut(FIXED_RATIO, round_up=FIXED_ROUND_UP, layer_keep=FIXED_LAYER_KEEP))
        log(f"{cell.key}: gap {verdict.gap_ratio:.3g}x, measured safe ratio {verdict.safe_ratio:g}")
        return row


def table(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    base = baseline["map50_95"]

    def cut(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return "–"
        m = row[key]
        return f"{m['map50_95']:.3f} ({m['map50_95'] - base:+.3f}) at {m['speed_up']:.2f}x"

    lines = [f"Baseline mAP50-95 {base:.3f}. mAP50-95 right after classic slimming (no finetuning), change vs the "
             f"baseline, GFLOPs speed-up. The safe ratio is measured (largest cut, round up 8, whose task losses "
             f"stay within the bound); the cut that broke it and the task:", "",
             "| optimizer (lr0) | nbs | sr | γ lr | seed | optimizer steps | gap ratio | safe ratio (broke at) | sparse "
             f"mAP50-95 | slim at the safe ratio | slim at {FIXED_RATIO:g} (round up {FIXED_ROUND_UP}, layer keep "
             f"{FIXED_LAYER_KEEP:g}) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        v, m = row["verdict"], row["measured_cut"]
        broke = f" ({m['breaking_ratio']:g}, {m['breaking_task']})" if m["breaking_ratio"] else ""
        safe = (f"{v['safe_ratio']:g}" if v["separated"] else "none") + broke
        lines.append(f"| {row['optimizer']} → {row['optimizer_used']} ({row['lr0_used']:g}) | {row['nbs']} | "
                     f"{row['sr']:g} | {row.get('gamma_lr_scale', 1.0):g}x | {row.get('seed', 0)} | {row['optimizer_steps']} | "
                     f"{v['gap_ratio']:.2f}x | {safe} | "
                     f"{row['sparse']['map50_95']:.3f} | {cut(row, 'at_safe_ratio')} | {cut(row, 'at_fixed_ratio')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on the methods benchmark's quick plan")
    parser.add_argument("--methods-out", default="runs/benchmarks/methods-full",
                        help="benchmarks/methods.py's --out: its cache holds the baseline and the data")
    parser.add_argument("--out", default="runs/benchmarks/sparse-defaults", help="cache and report folder")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), metavar="NAME[@LR]",
                        help="ultralytics optimizers ('auto' is the current default), NAME@LR to fix the lr")
    parser.add_argument("--nbs", nargs="+", default=list(NOMINAL_BATCHES), metavar="N",
                        help="nominal batches: 'batch' (step every batch) or a number of images")
    parser.add_argument("--sr", nargs="+", type=float, default=list(SRS), help="penalty coefficients")
    parser.add_argument("--gamma-lr-scales", nargs="+", type=float, default=[1.0], metavar="K",
                        help="the penalized γ's lr as multiples of lr0 (yoloslim sparse --gamma-lr-scale)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds of the sparse runs")
    parser.add_argument("--share", type=float, default=SHARE, help="sparse epochs as a share of the baseline's")
    parser.add_argument("--data", help="data.yaml of another dataset (default: the methods benchmark's digits); its "
                                       "baseline is trained with the same plan, cached in --methods-out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.commands.common import OPTIMIZERS as KNOWN
    from yoloslim.engine.checkpoint import atomic_write_bytes
    from yoloslim.errors import UserError

    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.data:
        plan = replace(plan, data=str(Path(args.data).resolve()))
    try:
        unknown = sorted({o.split("@")[0] for o in args.optimizers} - set(KNOWN))
        if unknown:
            raise UserError(f"unknown optimizer(s) {', '.join(unknown)} — choose from {' '.join(KNOWN)}")
        for spec in (o for o in args.optimizers if "@" in o):
            try:
                Cell(spec, "batch", 1.0).lr0
            except ValueError:
                raise UserError(f"--optimizers {spec}: the part after @ must be a learning rate, e.g. AdamW@0.002"
                                ) from None
        if any(n != "batch" and not (n.isdigit() and int(n) >= 1) for n in args.nbs):
            raise UserError(f"--nbs takes 'batch' or positive numbers of images, got {' '.join(args.nbs)}")
        if not 0.0 < args.share <= 1.0 or any(not v > 0 for v in (*args.sr, *args.gamma_lr_scales)):
            raise UserError("--share must be in (0, 1] and every --sr and --gamma-lr-scales positive")
        grid = Grid(plan, Path(args.methods_out), Path(args.out), args.share)
        started = time.perf_counter()
        baseline = grid.prepare()
        rows = [grid.run_cell(Cell(o, n, sr, k, seed)) for o in args.optimizers for n in args.nbs for sr in args.sr
                for k in args.gamma_lr_scales for seed in args.seeds]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(baseline, rows)
    out = grid.out
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    write_json(out / "sparse_defaults.json", {
        "command": command, "plan": asdict(plan), "sparse_epochs": grid.epochs, "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"), "step_seconds": grid.steps.seconds,
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1), "baseline": baseline, "rows": rows})
    atomic_write_bytes(out / "sparse_defaults.md", (text + "\n").encode())
    print(f"\n{text}\n\nreport in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
