"""Two CPU settings that decide training speed: torch's thread count and denormal flushing.

``threads`` trains yolov8n from yaml for ``--epochs`` at each thread count in turn (ultralytics alone
would use cores - 1 threads, yoloslim an explicit OMP_NUM_THREADS; the count is forced here). ``denormals`` times forward + backward of a
checkpoint at batch 8 with denormal flushing off and on, in turn, and counts denormal weights.

    OMP_NUM_THREADS=2 python benchmarks/studies/cpu_training_speed.py threads --data D/data.yaml --threads 1 2
    OMP_NUM_THREADS=1 python benchmarks/studies/cpu_training_speed.py denormals --weights a.pt b.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.report.machine import describe_machine


def train_seconds(data: str, threads: int, epochs: int, imgsz: int) -> float:
    import ultralytics.utils.torch_utils as torch_utils

    from yoloslim.engine.train import train

    torch_utils.NUM_THREADS = threads  # what ultralytics' select_device sets torch to
    os.environ.pop("OMP_NUM_THREADS", None)  # else yoloslim's trainer applies the user's request instead
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as project:
        train("yolov8n.yaml", data, epochs=epochs, imgsz=imgsz, batch=8, project=project, name="t", plots=False,
              val=False, nbs=8, mosaic=0.0, optimizer="AdamW", lr0=0.002, workers=0, device="cpu")
    return time.perf_counter() - started


def _scalar_loss(outputs) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs.float().square().mean()
    values = outputs.values() if isinstance(outputs, dict) else outputs
    return sum(_scalar_loss(v) for v in values if isinstance(v, (torch.Tensor, dict, list, tuple)))


def step_seconds(weights: str, flush: bool, repeats: int, imgsz: int) -> float:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint

    model = checkpoint_module(read_checkpoint(weights)).train()
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.rand(8, 3, imgsz, imgsz)
    torch.set_flush_denormal(flush)
    try:
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            _scalar_loss(model(x)).backward()
            times.append(time.perf_counter() - started)
    finally:
        torch.set_flush_denormal(False)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="study", required=True)
    threads = sub.add_parser("threads")
    threads.add_argument("--data", required=True)
    threads.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    threads.add_argument("--epochs", type=int, default=2)
    threads.add_argument("--imgsz", type=int, default=160)
    threads.add_argument("--rounds", type=int, default=2)
    denormals = sub.add_parser("denormals")
    denormals.add_argument("--weights", nargs="+", required=True)
    denormals.add_argument("--repeats", type=int, default=7)
    denormals.add_argument("--imgsz", type=int, default=160)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    if args.study == "threads":
        for _ in range(args.rounds):
            for n in args.threads:
                print(f"{n} thread(s): {train_seconds(args.data, n, args.epochs, args.imgsz):.1f} s for "
                      f"{args.epochs} epochs", flush=True)
    else:
        torch.set_num_threads(1)
        for weights in args.weights:
            off, on = (step_seconds(weights, flush, args.repeats, args.imgsz) for flush in (False, True))
            print(f"{weights}: forward+backward at batch 8 × {args.imgsz} px: {off:.3f} s with denormals, "
                  f"{on:.3f} s flushed ({off / on:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
