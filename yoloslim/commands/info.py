"""What a model costs: parameters, GFLOPs at --imgsz, size, and CPU latency (ONNX Runtime and
PyTorch, batch 1, median after warm-up). Parameters and GFLOPs are also given for the deployed form
(BatchNorm, RepConv branches and YOLOv7's implicit tensors folded into convs, as export does)."""

from __future__ import annotations

import argparse
import json

from yoloslim.commands.common import add_model_arg

NAME = "info"
HELP = "parameters, GFLOPs, size and CPU latency of a model"
ORDER = 65


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p)
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    p.add_argument("--runs", type=int, default=20, help="timed runs for the latency median")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from yoloslim.report.metrics import measure

    stats = measure(args.weights, imgsz=args.imgsz, latency=not args.no_latency, runs=args.runs)
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"parameters      {stats['params']:,}")
    print(f"GFLOPs@{args.imgsz:<8} {stats['gflops']:.2f}")
    print(f"deployed        {stats['params_fused']:,} parameters, {stats['gflops_fused']:.2f} GFLOPs (fused)")
    print(f"size (fp16)     {stats['size_mb']:.2f} MB")
    if "file_mb" in stats:
        print(f"file size       {stats['file_mb']:.2f} MB")
    if "latency_ms" in stats:
        print(f"latency ONNX    {stats['latency_ms']:.2f} ms/img (CPU, batch 1, median of {args.runs})")
        print(f"latency torch   {stats['latency_torch_ms']:.2f} ms/img")
    return 0
