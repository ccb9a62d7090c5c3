"""Per-iteration cost of the sparsity penalty: sparse vs normal iterations of the same training run.

Within one run, the penalty is applied on every other optimizer step (nbs = batch, so every
iteration is a step); the median time from ``on_train_batch_start`` to ``on_train_batch_end``
(forward, backward, optimizer step — data loading excluded) of penalized iterations is compared
with that of the others, as medians and as the median ratio of neighbouring iterations;
interleaving cancels drift from other load on the machine. The penalty call itself is also timed,
which is the noise-free part of the cost.

    OMP_NUM_THREADS=2 python benchmarks/sparse_overhead.py --methods slim group_sl --iters 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.data import generate_dataset
from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.engine.train import train
from yoloslim.report.machine import machine_info
from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
from yoloslim.sparsity.api import TRACE_IMGSZ, build_module
from yoloslim.sparsity.callback import SparseTraining
from yoloslim.sparsity.penalties import make_penalty
from yoloslim.sparsity.selection import select_bns

WARMUP_ITERS = 4


class EveryOtherStep(SparseTraining):
    """Applies the penalty on odd-numbered iterations only, so one run times both kinds."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.penalty_times: list[float] = []

    def __call__(self, trainer) -> None:
        if self._batches % 2:
            start = time.perf_counter()
            super().__call__(trainer)
            self.penalty_times.append(time.perf_counter() - start)


class IterationTimer:
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def start(self, trainer) -> None:
        self._start = time.perf_counter()

    def stop(self, trainer) -> None:
        self.times.append(time.perf_counter() - self._start)


def measure(method: str, data: Path, args: argparse.Namespace, workdir: Path) -> dict:
    module, _ = build_module(args.model, data)
    prunable = prepare_for_pruning(module, imgsz=TRACE_IMGSZ)
    selection = select_bns(module, build_dependency_graph(prunable), prunable.ignored_layers)
    extension = EveryOtherStep(make_penalty(method, selection), sr=1e-2, schedule="linear")
    timer = IterationTimer()
    callbacks = [*extension.events(), ("on_train_batch_start", timer.start), ("on_train_batch_end", timer.stop)]
    train(module, data, epochs=1, imgsz=args.imgsz, batch=args.batch, nbs=args.batch, warmup_epochs=0, workers=0,
          plots=False, val=False, device="cpu", project=workdir, name=method, callbacks=callbacks)
    times = timer.times[WARMUP_ITERS:]  # WARMUP_ITERS is even: times[0] is a penalized (odd) iteration
    sparse, normal = times[0::2], times[1::2]
    sparse_ms, normal_ms = 1000 * statistics.median(sparse), 1000 * statistics.median(normal)
    paired = statistics.median(s / n - 1 for s, n in zip(sparse, normal))
    penalty_ms = 1000 * statistics.median(extension.penalty_times)
    return {"method": method, "penalized_bns": len(selection.penalized), "iterations": len(times),
            "normal_ms": round(normal_ms, 1), "sparse_ms": round(sparse_ms, 1),
            "overhead_pct": round(100 * (sparse_ms / normal_ms - 1), 2), "paired_overhead_pct": round(100 * paired, 2),
            "penalty_ms": round(penalty_ms, 2), "penalty_pct": round(100 * penalty_ms / normal_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--methods", nargs="+", default=["slim"])
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=40, help="training iterations per method")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_dataset("shapes", Path(tmp) / "data", n_train=args.batch * args.iters, n_val=4,
                                imgsz=args.imgsz, show_progress=False)
        results = [measure(m, data, args, Path(tmp) / "runs") for m in args.methods]
    machine = {**machine_info(), "model": args.model, "imgsz": args.imgsz, "batch": args.batch}
    print(json.dumps({"machine": machine, "results": results}, indent=2))
    print("\n| method | penalized BNs | iterations | normal ms/iter | sparse ms/iter | overhead (medians) "
          "| overhead (paired) | penalty ms/step | penalty / normal iter |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['method']} | {r['penalized_bns']} | {r['iterations']} | {r['normal_ms']} | {r['sparse_ms']} "
              f"| {r['overhead_pct']:+.1f}% | {r['paired_overhead_pct']:+.1f}% | {r['penalty_ms']} "
              f"| {r['penalty_pct']:.1f}% |")
    if args.json:
        atomic_write_bytes(args.json, json.dumps({"machine": machine, "results": results}, indent=2).encode())


if __name__ == "__main__":
    main()
