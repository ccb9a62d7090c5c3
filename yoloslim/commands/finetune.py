"""Finetune a pruned checkpoint as it is: the pruned architecture is trained, never rebuilt from its yaml.

best.pt/last.pt are fp32 and reload pruned; --resume LAST_PT continues an interrupted run with the
same structure. With --teacher (usually the unpruned model) the finetuning is distilled; the
distillation options are those of `yoloslim distill`.
Example: yoloslim finetune --weights pruned.pt --data data.yaml --teacher best.pt --logit l2 --feature cwd
"""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args, train_overrides
from yoloslim.distill.cli_args import add_distill_args, distill_config

NAME = "finetune"
HELP = "train a pruned model to recover accuracy"
ORDER = 40


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p)
    add_data_arg(p)
    add_train_args(p, epochs=50)
    p.add_argument("--resume", default=None, metavar="LAST_PT", help="continue an interrupted run from its last.pt")
    add_distill_args(p, teacher_required=False)


def run(args: argparse.Namespace) -> int:
    from yoloslim.distill.callback import Distiller
    from yoloslim.prune.api import finetune

    config = distill_config(args)
    distiller = Distiller(config) if config else None
    overrides = train_overrides(args)
    try:
        result = finetune(args.weights, args.data, epochs=overrides.pop("epochs"), imgsz=overrides.pop("imgsz"),
                          batch=overrides.pop("batch"), device=overrides.pop("device"), project=args.project,
                          name=args.name or "finetune", resume=args.resume or False,
                          callbacks=distiller.callbacks() if distiller else (), **overrides)
    finally:
        if distiller:
            distiller.close()
    print(f"best checkpoint: {result.best}")
    return 0
