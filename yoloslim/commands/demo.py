"""Run the whole workflow on built-in synthetic data and print the comparison table
(about ten minutes on 2 CPU cores; nothing is downloaded)."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the whole workflow on synthetic data and print the table"
ORDER = 1


def configure(p: argparse.ArgumentParser) -> None:
    from yoloslim.demo import DemoPlan

    defaults = DemoPlan()
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="baseline training epochs")
    p.add_argument("--finetune-epochs", type=int, default=defaults.finetune_epochs, help="finetuning epochs")
    p.add_argument("--imgsz", type=int, default=defaults.imgsz, help="image size")
    p.add_argument("--train-images", type=int, default=defaults.n_train, help="synthetic training images")
    p.add_argument("--speed-up", type=float, default=defaults.speed_up, help="pruning target (GFLOPs ratio)")


def run(args: argparse.Namespace) -> int:
    from yoloslim.demo import DemoPlan, run_demo

    plan = DemoPlan(epochs=args.epochs, finetune_epochs=args.finetune_epochs, imgsz=args.imgsz,
                    n_train=args.train_images, speed_up=args.speed_up)
    run_demo(args.out, plan)
    return 0
