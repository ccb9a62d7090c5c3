"""Validate a checkpoint with its task's metrics (box P/R/mAP, plus mask or pose mAP; top-1/top-5 for
classifiers), plus parameters, GFLOPs and size.
--data defaults to the dataset the checkpoint was trained on."""

from __future__ import annotations

import argparse
import json

from yoloslim.commands.common import add_data_arg, add_model_arg

LABELS = {"precision": "P", "recall": "R", "map50": "mAP50", "map50_95": "mAP50-95", "mask_map50": "mask mAP50",
          "mask_map50_95": "mask mAP50-95", "pose_map50": "pose mAP50", "pose_map50_95": "pose mAP50-95",
          "top1": "top-1", "top5": "top-5"}
NAME = "val"
HELP = "validate a checkpoint on a dataset"
ORDER = 60


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p)
    add_data_arg(p, required=False, from_checkpoint=True)
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--device", default=None,
                   help="'cpu' or a CUDA index (default: the first CUDA device if there is one, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from yoloslim.engine.train import data_from_checkpoint
    from yoloslim.engine.validate import validate
    from yoloslim.report.metrics import measure

    if args.data is None:
        args.data = data_from_checkpoint(args.weights, NAME)
    accuracy = validate(args.weights, args.data, imgsz=args.imgsz, batch=args.batch, device=args.device)
    cost = measure(args.weights, imgsz=args.imgsz, latency=False)
    result = {**accuracy, **cost}
    if args.json:
        print(json.dumps(result))
        return 0
    print("  ".join(f"{LABELS[key]} {value:.3f}" for key, value in accuracy.items()))
    print(f"params {cost['params']:,}  GFLOPs@{args.imgsz} {cost['gflops']:.2f}  size {cost['size_mb']:.2f} MB (fp16)")
    return 0
