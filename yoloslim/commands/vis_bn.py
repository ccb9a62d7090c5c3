"""Overlay the BatchNorm |γ| distributions of one or more checkpoints in one figure, e.g. a
baseline next to its sparse-trained versions, and print their sparsity statistics and verdicts.
A checkpoint whose γ separated gets its gap shaded and its safe cut (the largest --prune-ratio
that removes only channels below the gap) drawn."""

from __future__ import annotations

import argparse

NAME = "vis-bn"
HELP = "plot BN γ distributions of checkpoints"
ORDER = 16


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True, metavar="PT",
                   help="one or more checkpoints, e.g. the unsparsified baseline and a sparse run's last.pt")
    p.add_argument("--out", default="bn_gamma_overlay.png", help="figure path (.png)")


def run(args: argparse.Namespace) -> int:
    import torch

    from yoloslim.errors import require_file
    from yoloslim.sparsity.compare import compare_checkpoints
    from yoloslim.sparsity.stats import describe_stats, gamma_stats

    for path in args.weights:
        require_file(path, "checkpoint")
    judged = compare_checkpoints(args.weights, args.out)
    for label, (values, verdict) in judged.items():
        print(f"{label}: {len(values)} channels, {describe_stats(gamma_stats(torch.from_numpy(values)))}; "
              f"{verdict.describe()}")
    print(f"figure written: {args.out}")
    return 0
