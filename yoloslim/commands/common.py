"""Arguments shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_model_arg(p: argparse.ArgumentParser, required: bool = True, flag: str = "--weights") -> None:
    aliases = ["--weights", "--model"] if flag in {"--weights", "--model"} else [flag]
    p.add_argument(*aliases, dest="weights", required=required, metavar="PT_OR_YAML",
                   help="checkpoint path (.pt, also a best.pt of the original YOLOv5 repo) or a model yaml such "
                        "as yolov8n.yaml or yolov5n-anchor.yaml")


def add_data_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="DATA_YAML",
                   help="YOLO data.yaml (make one offline with `yoloslim synth`)")


OPTIMIZERS = ("auto", "SGD", "MuSGD", "AdamW", "Adam", "NAdam", "RAdam", "Adamax", "RMSprop")


def add_train_args(p: argparse.ArgumentParser, epochs: int = 100) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--device", default="cpu", help="'cpu', a CUDA index such as '0', or '0,1' for DDP")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers (ultralytics uses 0 on CPU)")
    p.add_argument("--project", default=None, help="folder for runs (default ./runs/<command>)")
    p.add_argument("--name", default=None, help="run name inside the project folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--optimizer", default="auto", choices=OPTIMIZERS, metavar="{" + ",".join(OPTIMIZERS) + "}",
                   help="ultralytics optimizer; 'auto' picks AdamW for runs under 10k iterations, else SGD "
                        "(with Adam-family optimizers --sr hardly changes how far BN γ shrink; with SGD it sets the pace)")
    p.add_argument("--lr0", type=float, default=None,
                   help="initial learning rate (default: ultralytics' 0.01; ignored by --optimizer auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA (ignored on CPU)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="write training plots")


def train_overrides(args: argparse.Namespace) -> dict:
    """The ultralytics trainer arguments that add_train_args defines."""
    return {
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "device": args.device,
        "workers": args.workers,
        "seed": args.seed,
        "amp": args.amp,
        "plots": args.plots,
        "optimizer": args.optimizer,
        **({"lr0": args.lr0} if args.lr0 is not None else {}),
    }
