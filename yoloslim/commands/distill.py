"""Train a student detector with a teacher's guidance (knowledge distillation).

The student (a yaml, a checkpoint — a pruned one stays pruned) learns from the labels and from the
teacher: --logit matches head outputs, --feature matches intermediate features through trained
1x1 connectors, which are kept in last.pt (so --resume LAST_PT alone continues them) but never in
the saved student. Each distillation term is logged beside box/cls/dfl. Any ultralytics training
setting can follow the flags as KEY=VALUE words.
Example: yoloslim distill --model pruned.pt --teacher best.pt --data data.yaml --logit l2 --feature cwd
"""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args
from yoloslim.distill.cli_args import add_distill_args, distill_config

NAME = "distill"
HELP = "train a student with a teacher (logit and/or feature distillation)"
ORDER = 45


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, required=False, flag="--model")
    add_data_arg(p, required=False)
    add_distill_args(p, teacher_required=False)
    add_train_args(p)


def run(args: argparse.Namespace) -> int:
    from yoloslim.commands.run_settings import resolve_run
    from yoloslim.distill.callback import Distiller
    from yoloslim.engine.train import run_dir, train
    from yoloslim.errors import UserError

    run = resolve_run(args, NAME)
    config = distill_config(args)
    if config is None:
        raise UserError("distill needs --teacher PT_OR_YAML (the model to learn from)")
    distiller = Distiller(config)
    try:
        result = train(args.weights or run.resume, args.data, project=run_dir(args.project, "distill"),
                       name=args.name or "distill", resume=run.resume or False,
                       callbacks=[*run.record.callbacks(), *distiller.callbacks()], **run.overrides)
    finally:
        distiller.close()
    print(f"best checkpoint: {result.best}")
    return 0
