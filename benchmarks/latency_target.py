"""Pruning to a measured latency target: what issue #19's targets are measured with.

    OMP_NUM_THREADS=2 python benchmarks/latency_target.py [--parts table land error equal accuracy]

Uses the methods benchmark's trained yolov8n and digits data (``benchmarks/methods.py --out
runs/benchmarks/methods-full``; run it first, or this trains that baseline). All timing is ONNX Runtime on the CPU
at 640 px, batch 1, one thread, base and pruned timed alternately in one process (median of 30 runs each):
- table: seconds to build the latency table from scratch (target: at most 3 minutes);
- land: ``lamp`` with ``--latency-speed-up 2.0`` under each ``--latency-rank``, then the pruned model re-timed on
  its own (target: in [2.0, 2.1]);
- error: the table's prediction against the measured latency on 10 random prunings (target: at most 10%);
- equal: ``lamp`` planned on GFLOPs at the GFLOPs target whose measured latency matches the latency-planned model
  (the default ranking's), and at the smallest GFLOPs target tried whose measured speed-up reached 2.0x;
- accuracy: all finetuned with the methods benchmark's recipe (40 epochs); the latency-planned mAP50-95 should be
  at least the FLOPs-planned one's;
- profile: milliseconds per ONNX operator type inside the base model and a 50% random pruning (ORT's profiler).
The timing parts need a quiet machine. Results: ``<out>/latency-target.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods_lib import Plan, StepCache, write_json  # noqa: E402
from methods import Benchmark  # noqa: E402

from yoloslim.latency.cost import RANKINGS  # noqa: E402

IMGSZ = 640
TARGET = 2.0
RUNS = 30
RANDOM_PRUNINGS = 10
PARTS = ("table", "land", "error", "equal", "accuracy", "profile")
PROFILE_RUNS = 13


def log(message: str) -> None:
    print(f"[latency-target] {message}", flush=True)


def prepared(weights: str):
    from yoloslim.models.load import load_module
    from yoloslim.prune.graph import prepare_for_pruning

    return prepare_for_pruning(load_module(weights).float().eval(), imgsz=64).model


def timed_pair(base, pruned) -> dict[str, float]:
    from yoloslim.latency.runtimes import OnnxRuntimeCPU

    base_ms, pruned_ms = OnnxRuntimeCPU(1).compare(base, pruned, IMGSZ, 1, RUNS)
    return {"base_ms": base_ms, "ms": pruned_ms, "speed_up": base_ms / pruned_ms}


class LatencyBenchmark:
    def __init__(self, methods_out: Path, out: Path) -> None:
        self.bench = Benchmark(Plan(), methods_out, variants=False)
        self.bench.data = self.bench.dataset()
        self.baseline = self.bench.baseline()
        self.out = out.resolve()
        self.steps = StepCache(self.out / "cache")
        self.tables = self.out / "tables"

    def latency_target(self):
        from yoloslim.latency.cost import LatencyTarget

        return LatencyTarget(threads=1, batch=1, runs=RUNS, cache=self.tables)

    def table(self) -> dict[str, Any]:
        from yoloslim.latency.runtimes import OnnxRuntimeCPU
        from yoloslim.latency.table import build_table, evenly_narrowed

        def run() -> dict[str, Any]:
            for old in self.tables.glob("*.json"):
                old.unlink()
            model = prepared(self.baseline)
            table = build_table(model, OnnxRuntimeCPU(1), IMGSZ, 1, 8, 0.8, cache=self.tables, runs=RUNS, log=log,
                                calibration=lambda: evenly_narrowed(model, IMGSZ))
            return {"seconds": table.seconds, "samples": table.samples, "layers": len(table.layers),
                    "model_ms": table.model_ms, "constant_ms": table.constant_ms, "scale": table.scale,
                    "offset": table.offset, "calibration": table.calibration, "path": str(table.path)}

        return self.steps.get_or_run("table", run)

    def land(self, rank: str) -> dict[str, Any]:
        from dataclasses import replace

        from yoloslim.prune.api import prune_model

        def prune():
            return prune_model(self.baseline, method="lamp", speed_up=TARGET, imgsz=IMGSZ,
                               latency=replace(self.latency_target(), rank=rank))

        pruned = self.bench.pruned(f"lamp-latency-2x-{rank}", prune)

        def run() -> dict[str, Any]:
            from yoloslim.models.load import load_module

            return timed_pair(prepared(self.baseline), load_module(pruned["weights"]).float().eval())

        return {"rank": rank, "planner": pruned["prune"], "retimed": self.steps.get_or_run(f"land-retimed-{rank}", run),
                "pruned": pruned}

    def error(self) -> list[dict[str, Any]]:
        from yoloslim.latency.runtimes import OnnxRuntimeCPU
        from yoloslim.latency.table import build_table, current_widths
        from yoloslim.prune.api import prune_model

        def run() -> list[dict[str, Any]]:
            base = prepared(self.baseline)
            table = build_table(base, OnnxRuntimeCPU(1), IMGSZ, 1, 8, 0.8, cache=self.tables, log=log)
            rng = random.Random(0)
            rows = []
            for i in range(RANDOM_PRUNINGS):
                ratio = round(rng.uniform(0.1, 0.6), 3)
                pruned = prune_model(base, method="random", prune_ratio=ratio, imgsz=IMGSZ, seed=i, log=log).model
                predicted = table.model_estimate(current_widths(pruned, table))
                timed = timed_pair(base, pruned)
                predicted_ms = predicted * timed["base_ms"] / table.model_ms  # on the scale of this pair's base
                rows.append({"ratio": ratio, "seed": i, **timed, "predicted_ms": predicted_ms,
                             "error": predicted_ms / timed["ms"] - 1.0})
                log(f"random pruning {i}: ratio {ratio}, measured {timed['ms']:.2f} ms, predicted "
                    f"{predicted_ms:.2f} ms ({rows[-1]['error']:+.1%})")
            return rows

        return self.steps.get_or_run("error", run)

    def equal(self, wanted: float) -> dict[str, Any]:
        """lamp planned on GFLOPs at the target whose measured latency speed-up matches ``wanted`` (bisection)."""
        from yoloslim.prune.api import prune_model

        def run() -> dict[str, Any]:
            base = prepared(self.baseline)
            low, high, tried = 1.5, 5.0, []
            for _ in range(6):
                middle = (low + high) / 2
                result = prune_model(self.baseline, method="lamp", speed_up=middle, imgsz=IMGSZ, log=log)
                timed = timed_pair(base, result.model)
                tried.append({"gflops_target": middle, "gflops_speed_up": result.speed_up, **timed})
                log(f"GFLOPs target {middle:.3f}x: measured latency speed-up {timed['speed_up']:.3f}x "
                    f"(wanted {wanted:.3f}x)")
                low, high = (middle, high) if timed["speed_up"] < wanted else (low, middle)
            best = min(tried, key=lambda t: abs(t["speed_up"] - wanted))
            return {"tried": tried, "chosen": best}

        search = self.steps.get_or_run("equal-search", run)
        target = search["chosen"]["gflops_target"]
        pruned = self.bench.pruned("lamp-flops-equal-latency",
                                   lambda: prune_model(self.baseline, method="lamp", speed_up=target, imgsz=IMGSZ))
        reaching = [t for t in search["tried"] if t["speed_up"] >= TARGET]
        least = min(reaching, key=lambda t: t["gflops_speed_up"])["gflops_target"]
        least_pruned = self.bench.pruned("lamp-flops-least-2x",
                                         lambda: prune_model(self.baseline, method="lamp", speed_up=least, imgsz=IMGSZ))
        return {"search": search, "pruned": pruned, "least": least, "least_pruned": least_pruned}

    def profile(self) -> dict[str, dict[str, float]]:
        """Milliseconds per ONNX operator type (ORT's own profiler) of the base and of a model narrowed 50% at
        random: where the time goes inside the model, next to the table's layers timed alone."""
        import tempfile

        import numpy as np
        import onnxruntime as ort

        from yoloslim.engine.export import export_onnx
        from yoloslim.prune.api import prune_model

        def run() -> dict[str, dict[str, float]]:
            base = prepared(self.baseline)
            pruned = prune_model(base, method="random", prune_ratio=0.5, imgsz=IMGSZ, seed=0, log=log).model
            result = {}
            with tempfile.TemporaryDirectory() as tmp:
                for name, model in (("base", base), ("random 50%", pruned)):
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = options.inter_op_num_threads = 1
                    options.enable_profiling = True
                    options.profile_file_prefix = str(Path(tmp) / "profile")
                    onnx_file = export_onnx(model, imgsz=IMGSZ, out=Path(tmp) / "m.onnx", check=False).path
                    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
                    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
                    for _ in range(PROFILE_RUNS):
                        session.run(None, {session.get_inputs()[0].name: x})
                    per_op: dict[str, float] = {}
                    for event in json.loads(Path(session.end_profiling()).read_text()):
                        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                            op = event["args"]["op_name"]
                            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1e3 / PROFILE_RUNS
                    result[name] = dict(sorted(per_op.items(), key=lambda item: -item[1]))
            return result

        return self.steps.get_or_run("profile", run)

    def accuracy(self, lands: list[dict[str, Any]], equal: dict[str, Any]) -> list[dict[str, Any]]:
        budget = self.bench.finetune_budget(self.baseline)
        rows = [self.bench.row(f"lamp-latency-2x-{land['rank']}", f"lamp 2.0X measured latency, {land['rank']} ranking",
                               land["pruned"], budget) for land in lands]
        return [*rows, self.bench.row("lamp-flops-equal-latency", "lamp GFLOPs-planned at equal latency",
                                      equal["pruned"], budget),
                self.bench.row("lamp-flops-least-2x", "lamp GFLOPs-planned, least GFLOPs cut measured >= 2.0x",
                               equal["least_pruned"], budget)]


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Pruning to a measured latency target (yolov8n, 640 px, ORT CPU 1 thread)", ""]
    if "table" in result:
        t = result["table"]
        lines += [f"- latency table: {t['samples']} layer samples over {t['layers']} convs and "
                  f"{len(t['calibration']) - 1} calibration models in {t['seconds']:.1f} s; model {t['model_ms']:.2f} ms "
                  f"≈ {t['offset']:.2f} + {t['scale']:.3f} × the timed convs' sum (alone: "
                  f"{t['model_ms'] - t['constant_ms']:.2f} ms)", ""]
    for land in result.get("land", []):
        planner, retimed = land["planner"], land["retimed"]
        lines += [f"- `--latency-speed-up {TARGET} --latency-rank {land['rank']}`: planner measured "
                  f"{planner['latency']['measured_speed_up']:.3f}x (predicted "
                  f"{planner['latency']['predicted_speed_up']:.3f}x) in {planner['steps']} step(s), "
                  f"{planner['seconds']:.1f} s; GFLOPs speed-up {planner['speed_up']:.3f}x; re-timed alone: "
                  f"{retimed['base_ms']:.2f} → {retimed['ms']:.2f} ms = **{retimed['speed_up']:.3f}x**", ""]
    if "error" in result:
        rows = result["error"]
        worst = max(abs(r["error"]) for r in rows)
        mean = sum(abs(r["error"]) for r in rows) / len(rows)
        lines += [f"- prediction error on {len(rows)} random prunings: mean |error| {mean:.1%}, worst {worst:.1%}", "",
                  "| ratio | measured | predicted | error |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['ratio']} | {r['ms']:.2f} ms | {r['predicted_ms']:.2f} ms | {r['error']:+.1%} |"
                  for r in rows]
        lines.append("")
    if "equal" in result:
        chosen = result["equal"]["search"]["chosen"]
        lines += [f"- GFLOPs-planned lamp at equal measured latency: GFLOPs target {chosen['gflops_target']:.3f}x → "
                  f"measured {chosen['speed_up']:.3f}x", ""]
    if "accuracy" in result:
        lines += ["| row | GFLOPs | mAP50-95 after pruning | after BN recalibration | mAP50-95 after finetune | "
                  "latency 640 px b1 |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['gflops']:.3f} | {r['map50_95_before_finetune']:.3f} | "
                  f"{r['map50_95_recalibrated']:.3f} | {r['map50_95']:.3f} | {r['latency_640_b1_ms']:.1f} ms |"
                  for r in result["accuracy"]]
    for name, per_op in result.get("profile", {}).items():
        lines += ["", f"- ORT profile, {name}: {sum(per_op.values()):.2f} ms in kernels; "
                  + ", ".join(f"{op} {ms:.2f}" for op, ms in per_op.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--methods-out", default="runs/benchmarks/methods-full",
                        help="the methods benchmark's folder (trained baseline, data, row cache)")
    parser.add_argument("--out", default="runs/benchmarks/latency-target")
    args = parser.parse_args(argv)
    runner = LatencyBenchmark(Path(args.methods_out), Path(args.out))
    report = runner.out / "latency-target.json"
    result: dict[str, Any] = json.loads(report.read_text()) if report.is_file() else {}
    if "table" in args.parts:
        result["table"] = runner.table()
    if {"land", "equal", "accuracy"} & set(args.parts):
        result["land"] = [runner.land(rank) for rank in RANKINGS]
    if "error" in args.parts:
        result["error"] = runner.error()
    if {"equal", "accuracy"} & set(args.parts):
        result["equal"] = runner.equal(result["land"][0]["retimed"]["speed_up"])
    if "accuracy" in args.parts:
        result["accuracy"] = runner.accuracy(result["land"], result["equal"])
    if "profile" in args.parts:
        result["profile"] = runner.profile()
    write_json(report, result)
    (runner.out / "latency-target.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
