"""Train a detector normally (the baseline for pruning; the seeds' sr=0 run).

Any ultralytics training setting can follow the flags as KEY=VALUE words (mosaic=0 cos_lr=True) or come
from --cfg FILE; --resume LAST_PT alone continues an interrupted run exactly as it was started.
"""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args

NAME = "train"
HELP = "train a detector from a yaml or checkpoint"
ORDER = 10


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, required=False, flag="--model")
    add_data_arg(p, required=False)
    add_train_args(p)


def run(args: argparse.Namespace) -> int:
    from yoloslim.commands.run_settings import resolve_run
    from yoloslim.engine.train import train

    run = resolve_run(args, NAME)
    result = train(args.weights or run.resume, args.data, project=args.project, name=args.name or "train",
                   resume=run.resume or False, callbacks=run.record.callbacks(), **run.overrides)
    print(f"best checkpoint: {result.best}")
    return 0
