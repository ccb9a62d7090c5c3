"""How sparse training spread γ, and which channels each row cut from the slim-sparse model.

    python benchmarks/studies/slim_cut_audit.py --out runs/benchmarks/methods [--defended 0.8]

Reads a finished ``benchmarks/methods.py`` folder. Prints the |γ| percentiles of the slim-sparse model
and of its sr=0 control; then, per row pruned from the slim-sparse model, the residual-tied channels
removed (sparse training leaves those unpenalized) and, among the others, those removed below and
at/above ``--defended`` |γ| (the loss holds useful γ up; the rest cluster lower). Only widths are
compared, so per layer removed channels count as undefended first: the defended count is a lower
bound. Finally re-prunes the slim-sparse model to the run's speed-up with ``slim`` under a looser
per-layer cap and with torch-pruning's BN importance unnormalized, and reports mAP50-95 right after
pruning, to tell the settings apart from the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch_pruning as tp
from torch import nn

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.engine.validate import validate
from yoloslim.models.load import load_module
from yoloslim.prune import methods as registry
from yoloslim.prune.api import prune_model
from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
from yoloslim.sparsity.compare import checkpoint_gammas
from yoloslim.sparsity.selection import EXCLUDED_COUPLED, select_bns

PERCENTILES = (1, 10, 50, 70, 90, 99)
ROWS = ("slim", "classic-slim-0.3", "classic-slim-0.5", "classic-slim-0.7")  # the rows pruned from sparse-slim


def tied_bn_names(model: nn.Module, imgsz: int) -> set[str]:
    """The BNs sparse training leaves unpenalized because a residual add ties their channels."""
    prunable = prepare_for_pruning(model, imgsz=imgsz)
    selection = select_bns(model, build_dependency_graph(prunable), prunable.ignored_layers)
    return {name for name, reason in selection.excluded.items() if reason == EXCLUDED_COUPLED}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/benchmarks/methods", help="a finished benchmarks/methods.py folder")
    p.add_argument("--defended", type=float, default=0.8, help="|γ| at or above which a channel counts as defended")
    args = p.parse_args()
    out = Path(args.out)
    if not (out / "methods.json").is_file():
        print(f"error: {out} holds no finished methods run (no methods.json) — run benchmarks/methods.py "
              f"--out {out} first", file=sys.stderr)
        return 2
    plan = json.loads((out / "methods.json").read_text())["plan"]
    cache = next((out / "cache").glob("rows-*"))
    sparse = json.loads((cache / "sparse-slim.json").read_text())["value"]["weights"]
    data = plan.get("data") or str(next((out / "data").glob("*/data.yaml")))

    print("| continuation | " + " | ".join(f"p{q} |γ|" for q in PERCENTILES) + " |")
    print("|---|" + "---:|" * len(PERCENTILES))
    for label, key in (("normal (sr 0)", "sparse-slim-sr0"), (f"sparse (sr {plan['sr']:g})", "sparse-slim")):
        gammas = checkpoint_gammas(json.loads((cache / f"{key}.json").read_text())["value"]["weights"])
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in np.percentile(gammas, PERCENTILES)) + " |")

    source = load_module(sparse)
    tied = tied_bn_names(source, plan["imgsz"])
    print(f"| row | tied removed | undefended removed (at most) | defended (|γ| >= {args.defended:g}) removed "
          f"(at least) |")
    print("|---|---:|---:|---:|")
    for row in ROWS:
        step = cache / f"pruned-{row}.json"
        if not step.exists():
            continue
        pruned = dict(load_module(json.loads(step.read_text())["value"]["weights"]).named_modules())
        removed, total = Counter(), Counter()
        for name, bn in source.named_modules():
            if not isinstance(bn, nn.BatchNorm2d) or name not in pruned:
                continue
            gamma = bn.weight.detach().abs()
            cut = gamma.numel() - pruned[name].weight.numel()
            if name in tied:
                removed["tied"] += cut
                total["tied"] += gamma.numel()
                continue
            low = int((gamma < args.defended).sum())
            removed.update(undefended=min(cut, low), defended=max(0, cut - low))
            total.update(undefended=low, defended=gamma.numel() - low)
        print(f"| {row} | " + " | ".join(f"{removed[k]:,} of {total[k]:,}" for k in ("tied", "undefended", "defended"))
              + " |", flush=True)

    slim = registry.METHODS["slim"]
    variants = {"as in the run (--max-layer-ratio 0.8)": ({}, slim),
                "--max-layer-ratio 0.95": ({"max_layer_ratio": 0.95}, slim),
                "BNScaleImportance(normalizer=None)": ({}, dataclasses.replace(
                    slim, importance=lambda: tp.importance.BNScaleImportance(normalizer=None)))}
    print(f"\n| slim {plan['speed_up']:g}x variant | params | mAP50-95 right after pruning |\n|---|---:|---:|")
    try:
        for label, (options, method) in variants.items():
            registry.METHODS["slim"] = method  # prune_model takes methods by name, from this registry
            result = prune_model(sparse, method="slim", speed_up=plan["speed_up"], imgsz=plan["imgsz"], data=data,
                                 seed=plan["seed"], **options)
            score = validate(result.model, data, imgsz=plan["imgsz"], batch=plan["batch"])["map50_95"]
            print(f"| {label} | {result.summary()['params']:,} | {score:.3f} |", flush=True)
    finally:
        registry.METHODS["slim"] = slim
    return 0


if __name__ == "__main__":
    sys.exit(main())
