"""Finetune a pruned checkpoint as it is: the pruned architecture is trained, never rebuilt from its yaml.

best.pt/last.pt are fp32 and reload pruned; --resume LAST_PT alone continues an interrupted run with
the same structure and settings (distillation connectors included). --data defaults to the dataset
the checkpoint was trained on. With --teacher (usually the unpruned model) the finetuning is distilled;
the distillation options are those of `yoloslim distill`. Any ultralytics training setting can follow
the flags as KEY=VALUE words.
Example: yoloslim finetune --weights pruned.pt --data data.yaml --teacher best.pt --logit l2 --feature cwd
"""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args
from yoloslim.distill.cli_args import add_distill_args, distill_config

NAME = "finetune"
HELP = "train a pruned model to recover accuracy"
ORDER = 40


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, required=False)
    add_data_arg(p, required=False, from_checkpoint=True)
    add_train_args(p, epochs=50)
    add_distill_args(p, teacher_required=False)


def run(args: argparse.Namespace) -> int:
    from yoloslim.commands.run_settings import resolve_run
    from yoloslim.distill.callback import Distiller
    from yoloslim.engine.train import data_from_checkpoint
    from yoloslim.prune.api import finetune

    run = resolve_run(args, NAME)
    if not run.resume and args.data is None:
        args.data = data_from_checkpoint(args.weights, NAME)
    config = distill_config(args)
    distiller = Distiller(config) if config else None
    overrides = dict(run.overrides)
    try:
        result = finetune(run.resume or args.weights, args.data, epochs=overrides.pop("epochs", None),
                          imgsz=overrides.pop("imgsz", None), batch=overrides.pop("batch", None),
                          device=overrides.pop("device", None), project=args.project, name=args.name or "finetune",
                          resume=run.resume or False,
                          callbacks=[*run.record.callbacks(), *(distiller.callbacks() if distiller else ())],
                          **overrides)
    finally:
        if distiller:
            distiller.close()
    print(f"best checkpoint: {result.best}")
    return 0
