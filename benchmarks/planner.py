"""How long reaching a target speed-up takes: yoloslim's planner vs. stepping a pruner.

    OMP_NUM_THREADS=1 python benchmarks/planner.py [--model yolov8n.yaml] [--imgsz 640] [--speed-up 2.0]
                                                   [--repeats 3] [--naive]

"ours" is ``prune_model`` (rewrite + protection probe + planner + final GFLOPs check), timed
from a built model. ``--naive`` adds the approach the planner replaces: a torch-pruning
BasePruner stepped in small global increments (same LAMP importance, same protected layers),
with MACs re-counted at full ``--imgsz`` after each step until the target is met.
"""

from __future__ import annotations

import argparse
import statistics
import time


def ours(model_spec: str, imgsz: int, target: float) -> tuple[float, float]:
    from yoloslim.models import load_module
    from yoloslim.prune.api import prune_model

    model = load_module(model_spec)
    started = time.perf_counter()
    result = prune_model(model, speed_up=target, imgsz=imgsz, log=lambda _: None)
    return time.perf_counter() - started, result.speed_up


def naive(model_spec: str, imgsz: int, target: float, steps: int, max_seconds: float) -> tuple[float, float, int]:
    import torch
    import torch_pruning as tp

    from yoloslim.models import load_module
    from yoloslim.prune.graph import prepare_for_pruning

    model = load_module(model_spec)
    started = time.perf_counter()
    prepared = prepare_for_pruning(model, imgsz=64)
    full = torch.zeros(1, 3, imgsz, imgsz)
    base_macs, _ = tp.utils.count_ops_and_params(model, full)
    pruner = tp.pruner.BasePruner(model, prepared.example_inputs, importance=tp.importance.LAMPImportance(p=2),
                                  global_pruning=True, pruning_ratio=0.8, iterative_steps=steps,
                                  max_pruning_ratio=0.8, ignored_layers=prepared.ignored_layers,
                                  forward_fn=prepared.forward_fn)
    speed_up, step = 1.0, 0
    while speed_up < target and step < steps and time.perf_counter() - started < max_seconds:
        pruner.step()
        step += 1
        macs, _ = tp.utils.count_ops_and_params(model, full)
        speed_up = base_macs / macs
    return time.perf_counter() - started, speed_up, step


def main() -> None:
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.report.machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--speed-up", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also time the stepping baseline (minutes)")
    parser.add_argument("--naive-steps", type=int, default=400, help="baseline: steps to a 0.8 channel ratio")
    parser.add_argument("--naive-max-seconds", type=float, default=1800.0)
    args = parser.parse_args()

    runs = [ours(args.model, args.imgsz, args.speed_up) for _ in range(args.repeats)]
    seconds = [s for s, _ in runs]
    print(f"machine: {describe_machine()}")
    print(f"ours: {args.model} at {args.imgsz} px to {args.speed_up}x: median {statistics.median(seconds):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in seconds)}), reached {runs[0][1]:.3f}x")
    if args.naive:
        took, reached, steps = naive(args.model, args.imgsz, args.speed_up, args.naive_steps, args.naive_max_seconds)
        print(f"naive: {took:.1f} s, {steps} steps, reached {reached:.3f}x")


if __name__ == "__main__":
    main()
