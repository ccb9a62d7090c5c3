"""Train a student detector with a teacher's guidance (knowledge distillation).

The student (a yaml, a checkpoint — a pruned one stays pruned) learns from the labels and from the
teacher: --logit matches head outputs, --feature matches intermediate features through trained
1x1 connectors that are not saved. Each distillation term is logged beside box/cls/dfl.
Example: yoloslim distill --model pruned.pt --teacher best.pt --data data.yaml --logit l2 --feature cwd
"""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args, train_overrides
from yoloslim.distill.cli_args import add_distill_args, distill_config

NAME = "distill"
HELP = "train a student with a teacher (logit and/or feature distillation)"
ORDER = 45


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, flag="--model")
    add_data_arg(p)
    add_distill_args(p)
    add_train_args(p)


def run(args: argparse.Namespace) -> int:
    from yoloslim.distill.callback import Distiller
    from yoloslim.engine.train import run_dir, train

    distiller = Distiller(distill_config(args))
    try:
        result = train(args.weights, args.data, project=run_dir(args.project, "distill"),
                       name=args.name or "distill", callbacks=distiller.callbacks(), **train_overrides(args))
    finally:
        distiller.close()
    print(f"best checkpoint: {result.best}")
    return 0
