"""ONNX Runtime CPU latency of 8x-aligned vs unaligned slimmed models at matched GFLOPs.

Both models come from the same yolov8n whose BN |γ| are set to a seeded, sparse-trained-like
distribution (weights do not change latency; only the kept channel counts do, and those follow
the γ ranking). Each BN gets a random share in [--zero-low, --zero-high] of channels with
|γ| ~ U(0, 1e-3) ("switched off" by the penalty), the rest |γ| ~ U(0.05, 1).

The aligned model is ``slim_prune_model(ratio, round_up=8, layer_keep=0.01)``; the unaligned one
uses ``round_up=None`` at a ratio found by bisection so its GFLOPs at --imgsz are within
--tolerance of the aligned model's. Both are exported to ONNX and timed alternately over
several rounds (so load from other processes hits both alike), with ORT's default threads and
with one thread; the medians of the per-round medians and their min–max spread are reported.

    OMP_NUM_THREADS=1 python benchmarks/studies/slim_alignment.py --ratio 0.5 --rounds 7 --runs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.engine.export import export_onnx
from yoloslim.prune.classic import slim_prune_model
from yoloslim.report.machine import machine_info
from yoloslim.report.metrics import onnx_latency_ms


def sparse_like_model(spec: str, seed: int, zero_low: float, zero_high: float) -> nn.Module:
    """``spec`` built from yaml, every BN γ replaced by a seeded bimodal (near zero / O(1)) draw."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(spec, verbose=False).float().eval()
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            share = zero_low + (zero_high - zero_low) * float(torch.rand(1, generator=generator))
            off = torch.rand(n, generator=generator) < share
            small = torch.rand(n, generator=generator) * 1e-3
            large = 0.05 + 0.95 * torch.rand(n, generator=generator)
            module.weight.data = torch.where(off, small, large)
    return model


def channel_report(result) -> dict:
    pruned = [c for c in result.channels if c["after"] != c["before"]]
    return {"pruned_convs": len(pruned), "pruned_convs_multiple_of_8": sum(c["after"] % 8 == 0 for c in pruned)}


def match_gflops(model: nn.Module, target: float, high: float, tolerance: float, imgsz: int, shortcut: str,
                 steps: int):
    """Bisect the unaligned ratio in (0, high] until its GFLOPs are within ``tolerance`` of ``target``."""
    low, best = 0.0, None
    for _ in range(steps):
        ratio = (low + high) / 2
        result = slim_prune_model(model, ratio, shortcut=shortcut, layer_keep=0.01, imgsz=imgsz)
        gap = result.gflops / target - 1
        if best is None or abs(gap) < abs(best[1]):
            best = (result, gap, ratio)
        if abs(gap) <= tolerance / 2:
            break
        low, high = (ratio, high) if gap > 0 else (low, ratio)
    return best


def time_alternately(files: dict[str, Path], imgsz: int, rounds: int, runs: int, threads: int | None) -> dict:
    per_round: dict[str, list[float]] = {name: [] for name in files}
    for i in range(rounds):
        order = list(files) if i % 2 == 0 else list(reversed(files))
        for name in order:
            per_round[name].append(onnx_latency_ms(files[name], imgsz, runs=runs, threads=threads))
    ratios = [a / u for a, u in zip(per_round["aligned"], per_round["unaligned"])]
    return {"threads": threads or "ort default",
            **{name: {"median_ms": round(statistics.median(v), 2), "min_ms": round(min(v), 2),
                      "max_ms": round(max(v), 2)} for name, v in per_round.items()},
            "paired_ratio_median": round(statistics.median(ratios), 3),
            "paired_ratio_min": round(min(ratios), 3), "paired_ratio_max": round(max(ratios), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--ratio", type=float, default=0.5, help="prune ratio of the aligned model")
    parser.add_argument("--round-up", type=int, default=8)
    parser.add_argument("--shortcut", default="union", choices=["skip", "first", "union"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--tolerance", type=float, default=0.03, help="allowed relative GFLOPs gap")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero-low", type=float, default=0.2)
    parser.add_argument("--zero-high", type=float, default=0.8)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    model = sparse_like_model(args.model, args.seed, args.zero_low, args.zero_high)
    aligned = slim_prune_model(model, args.ratio, shortcut=args.shortcut, layer_keep=0.01,
                               round_up=args.round_up, imgsz=args.imgsz)
    unaligned, gap, ratio = match_gflops(model, aligned.gflops, args.ratio, args.tolerance, args.imgsz,
                                         args.shortcut, steps=20)
    if abs(gap) > args.tolerance:
        raise SystemExit(f"could not match GFLOPs within {args.tolerance:.0%} (closest gap {gap:+.1%})")
    models = {
        "aligned": {"ratio": args.ratio, "round_up": args.round_up, "gflops": round(aligned.gflops, 3),
                    "params": aligned.params, **channel_report(aligned)},
        "unaligned": {"ratio": round(ratio, 4), "round_up": None, "gflops": round(unaligned.gflops, 3),
                      "params": unaligned.params, **channel_report(unaligned)},
    }
    with tempfile.TemporaryDirectory(prefix="yoloslim-align-") as tmp:
        files = {name: export_onnx(result.model, imgsz=args.imgsz, out=Path(tmp) / f"{name}.onnx", check=False).path
                 for name, result in (("aligned", aligned), ("unaligned", unaligned))}
        timings = [time_alternately(files, args.imgsz, args.rounds, args.runs, threads)
                   for threads in (None, 1)]
    report = {"machine": machine_info(), "args": vars(args), "gflops_gap": round(gap, 4), "models": models,
              "latency": timings}
    print(json.dumps(report, indent=2))
    print("\n| ORT threads | aligned ms (min–max) | unaligned ms (min–max) "
          "| aligned / unaligned, paired (min–max) |")
    print("|---|---:|---:|---:|")
    for t in timings:
        a, u = t["aligned"], t["unaligned"]
        print(f"| {t['threads']} | {a['median_ms']} ({a['min_ms']}–{a['max_ms']}) | {u['median_ms']} "
              f"({u['min_ms']}–{u['max_ms']}) | {t['paired_ratio_median']} "
              f"({t['paired_ratio_min']}–{t['paired_ratio_max']}) |")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())


if __name__ == "__main__":
    main()
