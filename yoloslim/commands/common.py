"""Arguments shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_model_arg(p: argparse.ArgumentParser, required: bool = True, flag: str = "--weights") -> None:
    """``required=False`` for commands that check it themselves (a training command needs none with --resume)."""
    aliases = ["--weights", "--model"] if flag in {"--weights", "--model"} else [flag]
    p.add_argument(*aliases, dest="weights", required=required, metavar="PT_OR_YAML",
                   help="checkpoint path (.pt, also a best.pt of the original YOLOv5/YOLOv7 repo) or a model yaml "
                        "such as yolov8n.yaml, yolov5n-anchor.yaml or yolov7-tiny.yaml")


def add_data_arg(p: argparse.ArgumentParser, required: bool = True, from_checkpoint: bool = False) -> None:
    """``from_checkpoint``: when left out, the dataset the checkpoint was trained on (if that file still exists)."""
    default = " (default: the one the checkpoint was trained on, if that file still exists)" if from_checkpoint else ""
    p.add_argument("--data", required=required, metavar="DATA",
                   help=f"YOLO data.yaml, or a classifier's dataset folder (train/<class>/, val/<class>/); "
                        f"make either offline with `yoloslim synth --task ...`{default}")


OPTIMIZERS = ("auto", "SGD", "MuSGD", "AdamW", "Adam", "NAdam", "RAdam", "Adamax", "RMSprop")


def add_train_args(p: argparse.ArgumentParser, epochs: int = 100, optimizer: str = "auto",
                   lr0: float | None = None) -> None:
    """The training flags, ``--resume``, ``--cfg`` and any ultralytics setting as KEY=VALUE words; a command
    passes its own defaults for epochs, optimizer and lr0 (``sparse`` does, from its defaults)."""
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--device", default=None,
                   help="'cpu', a CUDA index such as '0', or '0,1' for DDP (default: the first CUDA device if there "
                        "is one, else cpu; the choice is printed)")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers (ultralytics uses 0 on CPU)")
    p.add_argument("--project", default=None, help="folder for runs (default ./runs/<command>)")
    p.add_argument("--name", default=None, help="run name inside the project folder")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--optimizer", default=optimizer, choices=OPTIMIZERS, metavar="{" + ",".join(OPTIMIZERS) + "}",
                   help="ultralytics optimizer; 'auto' picks AdamW for runs under 10k iterations, else SGD "
                        "(with Adam-family optimizers --sr hardly changes how far BN γ shrink; with SGD it sets the "
                        "pace)")
    p.add_argument("--lr0", type=float, default=lr0,
                   help="initial learning rate (default: ultralytics' 0.01; ignored by --optimizer auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA (ignored on CPU)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="write training plots")
    p.add_argument("--resume", default=None, metavar="LAST_PT",
                   help="continue an interrupted run from its last.pt, alone: every setting comes from the run "
                        "except those you type")
    p.add_argument("--cfg", default=None, metavar="YAML",
                   help="a yaml of ultralytics training settings (as `yolo cfg` lists them); typed flags and "
                        "KEY=VALUE words win over it")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                   help="any ultralytics training setting after the flags, e.g. mosaic=0 cos_lr=True close_mosaic=5 "
                        "(checked before any work)")
