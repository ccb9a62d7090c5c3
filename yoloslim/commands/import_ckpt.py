"""Convert a checkpoint written by the original YOLOv5 repo (v6.0-v7.0 best.pt/last.pt) or YOLOv7 repo
(best.pt/last.pt/init.pt, also reparameterized RepConvs) into a yoloslim checkpoint that plain
ultralytics.YOLO(path) also loads.

Every other command already accepts the original file directly; this writes the converted model once, for
users who want a file. The original is read without running code from it: a file that names anything a
YOLOv5/YOLOv7 checkpoint does not need is refused. The EMA weights are taken when the file still has them.
Example: yoloslim import --weights runs/train/exp/weights/best.pt --out yolov5s-best.pt
"""

from __future__ import annotations

import argparse

NAME = "import"
HELP = "convert an original YOLOv5/YOLOv7 checkpoint into a yoloslim checkpoint"
ORDER = 5


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, metavar="PT",
                   help="best.pt/last.pt written by the YOLOv5 or YOLOv7 repo")
    p.add_argument("--out", required=True, metavar="PT", help="where to write the yoloslim checkpoint")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from yoloslim.engine.checkpoint import save_model_checkpoint
    from yoloslim.errors import UserError
    from yoloslim.errors import require_file
    from yoloslim.models.original_checkpoints import import_checkpoint, is_original_checkpoint
    from yoloslim.report.metrics import count_params

    require_file(args.weights, "checkpoint")
    if not is_original_checkpoint(args.weights):
        raise UserError(f"{args.weights} is not a checkpoint of the original YOLOv5/YOLOv7 repo (it names no "
                        f"models.* classes) — ultralytics and yoloslim checkpoints are used as they are, without "
                        f"import")
    if Path(args.out).expanduser().resolve() == Path(args.weights).expanduser().resolve():
        raise UserError("--out is the input file — choose another path so the original checkpoint is kept")
    model = import_checkpoint(args.weights)["model"]
    out = save_model_checkpoint(model, args.out)
    source = model.yoloslim["imported"]
    print(f"imported {source['family']} {source['class']} ({source['weights']} weights, {model.model[-1].nc} "
          f"classes, {count_params(model):,} parameters)")
    print(f"yoloslim checkpoint: {out}")
    return 0
