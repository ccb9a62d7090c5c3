"""Prune a detector to a target speed-up (base GFLOPs / pruned GFLOPs at --imgsz) or by a channel ratio.

Writes pruned.pt (loads with plain ultralytics.YOLO), report.json, report.md and channels.png to
--out. With --data the report also has mAP, and data-driven methods get calibration batches;
--finetune-epochs E then trains the pruned model and adds a "finetuned" row.
--method slim --prune-ratio R is classic network slimming: one global |γ| threshold over all
prunable BN channels, with --shortcut, --layer-keep and --round-up. Several ratios
(--prune-ratio 0.2 0.4 0.6) give one subfolder each and one table. --method slim with neither
--prune-ratio nor --speed-up slims at the safe ratio that the checkpoint's sparse run recorded.
--method pagcp (PAGCP) sets every layer's ratio by the task losses it measures on --calib-batches
training batches, tuned by the --pagcp-* options. --latency-speed-up T aims at a measured latency
speed-up on the deployment runtime instead of a GFLOPs one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yoloslim.commands.common import add_data_arg, add_model_arg
from yoloslim.latency.runtimes import DEFAULT_RUNTIME, RUNTIMES
from yoloslim.prune.methods import DEFAULT_METHOD, METHODS
from yoloslim.prune.pagcp import PagcpSettings
from yoloslim.prune.recalibrate import DEFAULT_RECALIB_BATCHES
from yoloslim.prune.slimming import SHORTCUT_STRATEGIES

NAME = "prune"
HELP = "structured pruning to a target speed-up"
ORDER = 30
DEFAULT_SPEED_UP = 2.0


def configure(p: argparse.ArgumentParser) -> None:
    add_model_arg(p)
    add_data_arg(p, required=False)
    p.add_argument("--method", default=DEFAULT_METHOD, metavar="METHOD",
                   help="channel importance: " + ", ".join(f"{m.name} ({m.summary})" for m in METHODS.values()))
    p.add_argument("--speed-up", type=float, default=None,
                   help=f"target base GFLOPs / pruned GFLOPs (> 1; left out: {DEFAULT_SPEED_UP:g}, but --method slim "
                        f"without --prune-ratio then slims at the safe ratio its sparse run recorded)")
    p.add_argument("--prune-ratio", type=float, nargs="+", default=None, metavar="R",
                   help="instead of --speed-up: remove this share (0..1) of the prunable channels; "
                        "several values prune the same model once each")
    p.add_argument("--max-steps", type=int, default=10, help="planner rounds (one trace + prune each) before giving up")
    p.add_argument("--global", dest="global_pruning", action=argparse.BooleanOptionalAction, default=True,
                   help="rank channels across all layers (--no-global: every layer loses the same share)")
    p.add_argument("--round-to", type=int, default=8,
                   help="round each pruned layer's remaining channels down to a multiple of this (0 = off)")
    p.add_argument("--max-layer-ratio", type=float, default=0.8,
                   help="no layer loses more than this share of its channels")
    p.add_argument("--ignore", nargs="+", default=[], metavar="NAME_OR_TYPE",
                   help="modules to keep unpruned: names (model.9) or class names (SPPF)")
    p.add_argument("--protect-head", action="store_true",
                   help="keep detection heads whole (default: heads prune inside, only the layers that write "
                        "boxes, scores and DFL keep their width)")
    p.add_argument("--imgsz", type=int, default=640, help="image size for GFLOPs, latency, mAP and finetuning")
    p.add_argument("--calib-batches", type=int, default=4,
                   help="training batches of --data that group_taylor/group_hessian take gradients on and pagcp "
                        "measures its losses on")
    p.add_argument("--batch", type=int, default=16, help="batch size for validation and finetuning")
    p.add_argument("--device", default="cpu", help="'cpu' or a CUDA index for calibration, validation, finetuning")
    p.add_argument("--seed", type=int, default=0, help="same seed, same pruned architecture")
    p.add_argument("--recalib", type=int, default=None, metavar="N",
                   help=f"re-estimate BatchNorm statistics on N training batches after pruning (default "
                        f"{DEFAULT_RECALIB_BATCHES} when --data is given; 0 = off); weights do not change")
    p.add_argument("--stages", type=int, default=1, metavar="K",
                   help="reach --speed-up in K prunes, finetuning --stage-epochs between them (needs --data)")
    p.add_argument("--stage-epochs", type=int, default=0, metavar="E", help="finetune epochs between stages")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="finetune the pruned model for E epochs (after the last stage; 0 = none)")
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                   help="measure ONNX Runtime CPU latency for the report")
    p.add_argument("--out", default="runs/prune", help="output folder")
    g = p.add_argument_group("classic network slimming (--method slim --prune-ratio R)")
    g.add_argument("--shortcut", choices=SHORTCUT_STRATEGIES, default="skip",
                   help="channels tied by residual adds: skip = never prune them, first = follow the first "
                        "layer's mask, union = keep a channel any layer keeps")
    g.add_argument("--layer-keep", type=float, default=None, metavar="FRACTION",
                   help="every layer keeps at least this fraction of its channels (and one)")
    g.add_argument("--round-up", type=int, default=None, metavar="N",
                   help="round each pruned layer's kept channels up to a multiple of N (8 suits deployment)")
    g = p.add_argument_group(
        "pruning to a measured latency (--latency-speed-up T)",
        "Times every prunable conv on the runtime across the widths the planner can produce (a latency table, "
        "cached in --out and reused), plans on it with the method's channel ranking, then "
        "times the pruned model against the base, alternately, and corrects until the measured speed-up is in "
        "[T, 1.05 T]. Measure on a quiet machine: other load shows up in the numbers.")
    g.add_argument("--latency-speed-up", type=float, default=None, metavar="T",
                   help="instead of --speed-up/--prune-ratio: target base / pruned latency at --imgsz, measured")
    g.add_argument("--runtime", default=DEFAULT_RUNTIME,
                   help=f"where latency is measured: {', '.join(RUNTIMES)}")
    g.add_argument("--latency-threads", type=int, default=1, help="runtime threads (as on the device)")
    g.add_argument("--latency-batch", type=int, default=1, help="batch size latency is measured at")
    g.add_argument("--latency-runs", type=int, default=20,
                   help="timed runs of base and pruned model (alternating; the medians count)")
    g.add_argument("--latency-rank", default="importance", metavar="{importance,per-ms}",
                   help="rank channels by the method's importance, or by importance per millisecond saved (cut "
                        "the early high-resolution layers first; it cost accuracy on the digits benchmark)")
    defaults = PagcpSettings()
    g = p.add_argument_group("PAGCP (--method pagcp --speed-up S --data D); defaults: the official README command")
    g.add_argument("--pagcp-rate", type=float, default=None, metavar="D0",
                   help=f"relative growth any task's loss may take at the first layer (default {defaults.rate:g})")
    g.add_argument("--pagcp-thres", type=float, default=None, metavar="T",
                   help=f"with --pagcp-exp: the product of (1 + d) over a round's layers (default {defaults.thres:g})")
    g.add_argument("--pagcp-topk", type=float, default=None, metavar="SHARE",
                   help=f"share of layers whose pruning a round keeps, the least loss per GFLOP first "
                        f"(default {defaults.topk:g})")
    g.add_argument("--pagcp-exp", action=argparse.BooleanOptionalAction, default=None,
                   help="shrink the bound after every layer so that its product is --pagcp-thres "
                        "(default on; off: every layer gets --pagcp-rate)")


def _row(name: str, model, args: argparse.Namespace, latency: bool | None = None) -> dict:
    from yoloslim.report.table import comparison_row

    return comparison_row(name, model, args.imgsz, data=args.data, batch=args.batch, device=args.device,
                          latency=args.latency if latency is None else latency)


def _classic(args: argparse.Namespace) -> bool:
    return args.method == "slim" and args.prune_ratio is not None


def _planner_settings(args: argparse.Namespace) -> PagcpSettings | None:
    """The --pagcp-* options as settings for --method pagcp (None for every other method)."""
    from yoloslim.errors import UserError

    given = {name: getattr(args, f"pagcp_{name}") for name in ("rate", "thres", "topk", "exp")}
    given = {name: value for name, value in given.items() if value is not None}
    if args.method == "pagcp":
        return PagcpSettings(**given)
    if given:
        raise UserError(f"--pagcp-{next(iter(given))} belongs to --method pagcp, not --method {args.method} — drop "
                        f"it or choose pagcp")
    return None


def _prune_options(args: argparse.Namespace) -> dict:
    """What prune_model takes from the command line, apart from the target and the data."""
    return dict(method=args.method, imgsz=args.imgsz, max_steps=args.max_steps, global_pruning=args.global_pruning,
                round_to=args.round_to, max_layer_ratio=args.max_layer_ratio, ignore=args.ignore,
                protect_heads=args.protect_head, calib_batches=args.calib_batches, device=args.device,
                seed=args.seed, planner_settings=_planner_settings(args), latency=_latency_target(args))


def _latency_target(args: argparse.Namespace):
    """--latency-* as the planner's latency settings (None without --latency-speed-up); tables cached in --out."""
    from yoloslim.latency.cost import LatencyTarget

    if args.latency_speed_up is None:
        return None
    return LatencyTarget(args.runtime, args.latency_threads, args.latency_batch, args.latency_runs,
                         Path(args.out).expanduser().resolve() / "latency-tables", args.latency_rank)


def _check_latency_args(args: argparse.Namespace) -> None:
    """--latency-speed-up replaces the other targets; it goes through the one-shot planner only."""
    from yoloslim.errors import UserError

    if args.latency_speed_up is None:
        return
    if args.speed_up is not None:  # --prune-ratio with it is refused by check_prune_settings
        raise UserError("--latency-speed-up and --speed-up both set the target — give one of them")
    if not args.latency_speed_up > 1.0:
        raise UserError(f"--latency-speed-up must be greater than 1.0 (base / pruned latency), got "
                        f"{args.latency_speed_up}")
    if args.stages > 1:
        raise UserError("--latency-speed-up prunes in one stage — drop --stages")
    args.speed_up = args.latency_speed_up


def _finetune_options(args: argparse.Namespace) -> dict:
    return dict(imgsz=args.imgsz, batch=args.batch, device=args.device, seed=args.seed)


def _prune_once(module, ratio: float | None, args: argparse.Namespace):
    from yoloslim.prune.api import prune_model
    from yoloslim.prune.classic import slim_prune_model

    if _classic(args):
        return slim_prune_model(module, ratio, shortcut=args.shortcut, layer_keep=args.layer_keep,
                                round_up=args.round_up, imgsz=args.imgsz, ignore=args.ignore,
                                protect_heads=args.protect_head)
    return prune_model(module, speed_up=args.speed_up, prune_ratio=ratio, data=args.data, **_prune_options(args))


def _recorded_ratio_wanted(args: argparse.Namespace) -> bool:
    return args.method == "slim" and args.prune_ratio is None and args.speed_up is None and args.stages == 1


def _recorded_ratio(ckpt: dict | None, args: argparse.Namespace) -> float:
    """The safe ratio the checkpoint's sparse run recorded (``yoloslim sparse`` measures it at the end), with the
    --layer-keep and --round-up it was found with unless the user gave them."""
    from yoloslim.engine.checkpoint import yoloslim_meta
    from yoloslim.sparsity.verdict import recorded_verdict

    verdict = recorded_verdict(yoloslim_meta(ckpt) if ckpt else {}, str(args.weights), args.shortcut)
    if args.layer_keep is None and verdict.layer_keep:
        args.layer_keep = verdict.layer_keep
    if args.round_up is None and verdict.round_up:
        args.round_up = verdict.round_up
    keep = f" with --layer-keep {args.layer_keep:g}" if args.layer_keep else ""
    keep += f" --round-up {args.round_up}" if args.round_up else ""
    print(f"--prune-ratio {verdict.safe_ratio:g}{keep}: the safe ratio recorded by the sparse run of {args.weights}")
    return verdict.safe_ratio


def _recalib_batches(args: argparse.Namespace) -> int:
    from yoloslim.errors import UserError

    if args.recalib is None:
        return DEFAULT_RECALIB_BATCHES if args.data else 0
    if args.recalib < 0:
        raise UserError(f"--recalib must be 0 (off) or a number of batches, got {args.recalib}")
    if args.recalib and not args.data:
        raise UserError("--recalib needs --data DATA_YAML: BatchNorm statistics are re-estimated on training images")
    return args.recalib


def _prune_and_measure(module, ratio: float | None, args: argparse.Namespace, folder: Path, baseline: dict):
    """Prune (one-shot or in stages), recalibrate; returns the result, its table rows and extra summary."""
    from yoloslim.prune.iterative import iterative_prune, stages_summary
    from yoloslim.prune.recalibrate import recalibrate_bn

    recalib = _recalib_batches(args)
    if args.stages > 1:
        result, stages = iterative_prune(module, args.data, args.speed_up, args.stages, args.stage_epochs, folder,
                                         _prune_options(args), _finetune_options(args), recalib=recalib)
        label = f"{args.method} {result.speed_up:.2f}x ({args.stages} stages)"
        return result, [baseline, _row(label, result.model, args)], {"stages": stages_summary(stages),
                                                                    "recalib_batches": recalib}
    result = _prune_once(module, ratio, args)
    label = f"{args.method} {result.speed_up:.2f}x" + (f" (ratio {ratio:g})" if ratio is not None else "")
    if "latency" in result.details:
        label = f"{args.method} {result.details['latency']['measured_speed_up']:.2f}x latency"
    if not recalib:
        return result, [baseline, _row(label, result.model, args)], {"recalib_batches": 0}
    plain = _row(label, result.model, args, latency=False)
    recalibrate_bn(result.model, args.data, recalib, imgsz=args.imgsz, batch=args.batch, device=args.device)
    recalibrated = _row(f"{label} + BN recalib", result.model, args)
    plain.update({k: v for k, v in recalibrated.items() if k.startswith("latency")})
    return result, [baseline, plain, recalibrated], {"recalib_batches": recalib}


def run(args: argparse.Namespace) -> int:
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint
    from yoloslim.engine.tasks import check_data_for
    from yoloslim.errors import UserError
    from yoloslim.models.load import load_module
    from yoloslim.prune.api import check_prune_settings, finetune
    from yoloslim.prune.iterative import check_iterative_settings
    from yoloslim.prune.report import write_report, write_sweep_report

    is_pt = str(args.weights).endswith(".pt")
    base = None
    _check_latency_args(args)
    if _recorded_ratio_wanted(args):
        base = read_checkpoint(args.weights) if is_pt else None
        args.prune_ratio = [_recorded_ratio(base, args)]
    args.speed_up = DEFAULT_SPEED_UP if args.speed_up is None else args.speed_up
    ratios = args.prune_ratio or [None]
    planner_settings = _planner_settings(args)
    for ratio in ratios:
        check_prune_settings(args.method, args.speed_up, ratio, args.max_steps, args.round_to or None,
                             args.max_layer_ratio, args.calib_batches, args.data, planner_settings,
                             _latency_target(args))
        check_iterative_settings(args.stages, args.stage_epochs, args.speed_up, ratio, args.data)
    if (args.layer_keep is not None or args.round_up is not None) and not _classic(args):
        raise UserError("--layer-keep and --round-up belong to classic slimming: use them with --method slim "
                        "--prune-ratio R (with --speed-up, use --max-layer-ratio and --round-to)")
    if args.finetune_epochs and not args.data:
        raise UserError("--finetune-epochs needs --data DATA_YAML to train on")
    _recalib_batches(args)
    if base is None and is_pt:
        base = read_checkpoint(args.weights)
    module = checkpoint_module(base) if base else load_module(args.weights)
    if args.data:
        check_data_for(module, args.data)
    out = Path(args.out).expanduser().resolve()

    baseline = _row("baseline", module, args)
    summaries, sweep_rows = [], [baseline]
    for ratio in ratios:
        folder = out if len(ratios) == 1 else out / f"ratio-{ratio:g}"
        result, rows, extra = _prune_and_measure(module, ratio, args, folder, baseline)
        summary = {**result.summary(), **extra}
        pruned_pt = save_model_checkpoint(result.model, folder / "pruned.pt", meta={"pruned": summary}, base=base)
        print(f"pruned checkpoint: {pruned_pt}")
        if args.finetune_epochs:
            tuned = finetune(pruned_pt, args.data, epochs=args.finetune_epochs, project=folder, name="finetune",
                             **_finetune_options(args))
            rows.append(_row(f"{rows[-1]['name']} finetuned", tuned.best, args))
            print(f"finetuned checkpoint: {tuned.best}")
        paths = write_report(folder, summary, rows, result.channels)
        summaries.append(summary)
        sweep_rows += rows[1:]
    if len(ratios) > 1:
        paths = write_sweep_report(out, summaries, sweep_rows)
    print(f"report: {paths['md']}")
    return 0
