"""Train a detector normally (the baseline for pruning; the seeds' sr=0 run)."""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args, train_overrides

NAME = "train"
HELP = "train a detector from a yaml or checkpoint"
ORDER = 10


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, flag="--model")
    add_data_arg(p)
    add_train_args(p)
    p.add_argument("--resume", default=None, metavar="LAST_PT", help="continue an interrupted run from its last.pt")


def run(args: argparse.Namespace) -> int:
    from yoloslim.engine.train import train

    result = train(args.weights, args.data, project=args.project, name=args.name or "train",
                   resume=args.resume or False, **train_overrides(args))
    print(f"best checkpoint: {result.best}")
    return 0
