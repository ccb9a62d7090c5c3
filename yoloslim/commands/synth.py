"""Write a synthetic YOLO dataset (no download): `shapes` for quick tests, `digits` for benchmarks."""

from __future__ import annotations

import argparse

NAME = "synth"
HELP = "generate an offline synthetic dataset"
ORDER = 5


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("shapes", "digits"), default="digits",
                   help="shapes: 3 easy classes; digits: 10 classes of handwritten digits on photo crops")
    p.add_argument("--out", required=True, help="output folder (data.yaml is written inside)")
    p.add_argument("--train", type=int, default=1000, help="number of training images")
    p.add_argument("--val", type=int, default=200, help="number of validation images")
    p.add_argument("--imgsz", type=int, default=320, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical dataset")


def run(args: argparse.Namespace) -> int:
    from yoloslim.data import generate_dataset

    path = generate_dataset(args.kind, args.out, n_train=args.train, n_val=args.val, imgsz=args.imgsz, seed=args.seed)
    print(f"dataset written: {path}")
    return 0
