"""Write a synthetic YOLO dataset (no download): `shapes` for quick tests, `digits` for benchmarks.

`--task` picks the ultralytics label format, so models of every task (detect, segment, pose,
obb, classify) have data offline.
"""

from __future__ import annotations

import argparse

NAME = "synth"
HELP = "generate an offline synthetic dataset"
ORDER = 5
TASKS = ("detect", "segment", "pose", "obb", "classify")  # yoloslim.data.synth.TASKS, without importing cv2 here


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("shapes", "digits"), default="digits",
                   help="shapes: 3 easy classes; digits: 10 classes of handwritten digits on photo crops")
    p.add_argument("--task", choices=TASKS, default="detect",
                   help="label format: detect = one box per object; segment = one polygon per object; "
                        "pose = box + 4 keypoints (top, bottom, left, right; kpt_shape [4, 3]); "
                        "obb = rotated box (4 corners; digits are drawn rotated); "
                        "classify = one large object per image in train/<class>/ and val/<class>/ folders")
    p.add_argument("--out", required=True,
                   help="output folder (data.yaml is written inside; classify trains on the folder itself)")
    p.add_argument("--train", type=int, default=1000, help="number of training images")
    p.add_argument("--val", type=int, default=200, help="number of validation images")
    p.add_argument("--imgsz", type=int, default=320, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical dataset")


def run(args: argparse.Namespace) -> int:
    from yoloslim.data import generate_dataset

    path = generate_dataset(args.kind, args.out, n_train=args.train, n_val=args.val, imgsz=args.imgsz,
                            seed=args.seed, task=args.task)
    print(f"dataset written: {path}")
    return 0
