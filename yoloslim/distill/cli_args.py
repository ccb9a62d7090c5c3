"""The distillation options, shared by ``yoloslim distill`` and ``yoloslim finetune --teacher``."""

from __future__ import annotations

import argparse

from yoloslim.distill.config import DistillConfig
from yoloslim.distill.losses import FEATURE_LOSSES
from yoloslim.distill.schedules import SCHEDULES
from yoloslim.distill.tasks import LOGIT_LOSSES


def layer_indices(text: str) -> list[int]:
    """argparse type for ``15,18,21``."""
    try:
        indices = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices such as 15,18,21, got {text!r}")
    if not indices:
        raise argparse.ArgumentTypeError("expected at least one layer index, e.g. 15,18,21")
    return indices


def add_distill_args(p: argparse.ArgumentParser, teacher_required: bool = True) -> None:
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", required=teacher_required, default=None, metavar="PT_OR_YAML",
                   help="teacher checkpoint (e.g. the unpruned model); its head/width may differ from the student's")
    g.add_argument("--logit", choices=LOGIT_LOSSES, default=None,
                   help="logit distillation — box heads (detect, segment, pose, obb): l1/l2 on matched anchors' "
                        "class and box outputs, ast = teacher scores as IoU-weighted soft binary targets; "
                        "classifiers: kl = KL divergence of temperature-softened class distributions")
    g.add_argument("--logit-weight", type=float, default=1.0, help="weight of the logit term")
    g.add_argument("--feature", choices=FEATURE_LOSSES, default=None,
                   help="feature distillation: mimic (MSE), mgd (masked generative), cwd (channel-wise)")
    g.add_argument("--feature-weight", type=float, default=1.0, help="weight of the feature term")
    g.add_argument("--layers", type=layer_indices, default=None, metavar="I,J,K",
                   help="layers whose outputs are matched, in student and teacher (unset: the layers feeding the head)")
    g.add_argument("--student-layers", type=layer_indices, default=None, metavar="I,J,K",
                   help="student layers, when they differ from the teacher's (overrides --layers)")
    g.add_argument("--teacher-layers", type=layer_indices, default=None, metavar="I,J,K",
                   help="teacher layers, paired in order with the student's (overrides --layers)")
    g.add_argument("--schedule", choices=tuple(SCHEDULES), default="constant",
                   help="distillation weight over the run: constant, or fading to 0 linearly / along a cosine")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of --feature cwd and --logit kl")
    g.add_argument("--mask-ratio", type=float, default=0.65, help="fraction of positions masked by --feature mgd")


def distill_config(args: argparse.Namespace) -> DistillConfig | None:
    """The distillation setup from parsed arguments; None when no ``--teacher`` was given."""
    if not args.teacher:
        return None
    return DistillConfig(
        teacher=args.teacher,
        logit=args.logit,
        feature=args.feature,
        logit_weight=args.logit_weight,
        feature_weight=args.feature_weight,
        student_layers=args.student_layers or args.layers,
        teacher_layers=args.teacher_layers or args.layers,
        schedule=args.schedule,
        temperature=args.temperature,
        mask_ratio=args.mask_ratio,
    )
