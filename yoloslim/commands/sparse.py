"""Sparse training: train with a penalty that drives BatchNorm scale factors (γ) of prunable
channels toward zero, so that `prune` can remove them with little accuracy loss. Which BNs are
penalized is derived from the model's channel dependencies; the run folder gets bn_gamma.png and
γ statistics in results.csv, with each epoch's gap between undefended and defended γ and the safe
prune ratio. --data defaults to the dataset the checkpoint was trained on; any ultralytics training
setting can follow as KEY=VALUE words; --resume LAST_PT alone continues a run, penalty state included."""

from __future__ import annotations

import argparse
from pathlib import Path

from yoloslim.commands.common import add_data_arg, add_model_arg, add_train_args
from yoloslim.sparsity.defaults import SPARSE_DEFAULTS

NAME = "sparse"
HELP = "sparse-train so BN channels become prunable"
ORDER = 15
DEFAULT_CLIP = 10.0


def configure(p: argparse.ArgumentParser) -> None:
    p.description = f"{p.description}\n\n{SPARSE_DEFAULTS.describe()}"
    add_model_arg(p, required=False)
    add_data_arg(p, required=False, from_checkpoint=True)
    add_train_args(p, optimizer=SPARSE_DEFAULTS.optimizer, lr0=SPARSE_DEFAULTS.lr0)
    p.add_argument("--nbs", type=int, default=SPARSE_DEFAULTS.nbs, metavar="N",
                   help="nominal batch: gradients accumulate over N images per optimizer step (left out: --batch, "
                        "one step per batch; ultralytics' own default 64 steps once per 64/batch batches)")
    p.add_argument("--sr", type=float, default=SPARSE_DEFAULTS.sr, help="penalty coefficient (0 = plain training)")
    p.add_argument("--sr-schedule", default=SPARSE_DEFAULTS.schedule, metavar="{linear,constant,cosine}",
                   help="how sr changes over the run: linear = sr*(1-0.9*epoch/epochs), per optimizer step")
    p.add_argument("--method", default=SPARSE_DEFAULTS.method, metavar="{slim,group_slim,group_sl,group_reg}",
                   help="slim: L1 on BN γ; group_slim: group lasso over coupled BN γ; "
                        "group_sl: group-norm regularization; group_reg: growing regularization")
    p.add_argument("--penalize-coupled", action="store_true",
                   help="also penalize BNs whose channels are tied to a residual add")
    p.add_argument("--gamma-lr-scale", type=float, default=None, metavar="K",
                   help=f"the penalized BN γ learn at K x lr0, every other weight at lr0: a short run can move the "
                        f"undefended γ to zero with a gentler lr for the rest of the detector (left out: "
                        f"{SPARSE_DEFAULTS.gamma_lr_scale:g}, or a resumed run's own)")
    p.add_argument("--clip", type=float, nargs="?", const=DEFAULT_CLIP, default=None, metavar="MAX_NORM",
                   help=f"clip gradients (off by default in sparse training; bare --clip = {DEFAULT_CLIP:g})")


def verdict_line(last: str | Path) -> str:
    """The line a run ends with: the verdict last.pt recorded, with the speed-up of slimming at its safe ratio."""
    from yoloslim.engine.checkpoint import checkpoint_module, model_meta, read_checkpoint
    from yoloslim.sparsity.verdict import Verdict, slimmed_speed_up

    ckpt = read_checkpoint(last)
    module = checkpoint_module(ckpt)
    verdict = Verdict.from_record(model_meta(module)["sparse"]["verdict"])
    if not verdict.separated:
        return verdict.line()
    imgsz = int((ckpt.get("train_args") or {}).get("imgsz") or 640)
    return verdict.line(slimmed_speed_up(module, verdict, imgsz))


def run(args: argparse.Namespace) -> int:
    from yoloslim.commands.run_settings import resolve_run
    from yoloslim.engine.train import data_from_checkpoint
    from yoloslim.errors import UserError
    from yoloslim.sparsity import sparse_train

    run = resolve_run(args, NAME)
    if args.nbs is not None and args.nbs < 1:
        raise UserError(f"--nbs must be a positive number of images, got {args.nbs} — leave it out to step every "
                        f"batch")
    if not run.resume and args.data is None:
        args.data = data_from_checkpoint(args.weights, NAME)
    result = sparse_train(
        args.weights or run.resume, args.data, sr=args.sr, method=args.method, schedule=args.sr_schedule,
        penalize_coupled=args.penalize_coupled, clip=args.clip, gamma_lr_scale=args.gamma_lr_scale,
        project=args.project, name=args.name or "sparse",
        resume=run.resume or False, callbacks=run.record.callbacks(), **run.overrides,
    )
    print(f"best checkpoint: {result.best}")
    print(f"last checkpoint: {result.last} (the verdict below is on its γ)")
    print(f"γ distribution:  {result.save_dir / 'bn_gamma.png'}")
    print(verdict_line(result.last))
    return 0
