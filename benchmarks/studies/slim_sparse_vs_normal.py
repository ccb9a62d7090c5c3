"""mAP before/after classic slimming for a sparse-trained vs a normally trained continuation of one base model.

    python benchmarks/studies/slim_sparse_vs_normal.py --out runs/slim_sparse --epochs 10 --sr 1e-2
    python benchmarks/studies/slim_sparse_vs_normal.py --out runs/slim_sparse_sgd --base BASE.pt --data DATA.yaml \
        --imgsz 160 --batch 8 --epochs 8 --sr 3e-2

Both continuations start from the same base checkpoint with the same settings; only the BN penalty
differs. SGD, so that --sr sets the pace (under Adam-family optimizers a γ moves about lr per step
whatever --sr). It is not the better choice everywhere: on the methods benchmark's baseline, 8 epochs
of AdamW sparse training left a model that classic slimming cuts for free, while SGD at sr 1e-2 and
3e-2 lost most of the accuracy before any cut (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.data import generate_dataset
from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.engine.train import train
from yoloslim.engine.validate import validate
from yoloslim.models.load import load_module
from yoloslim.prune.classic import slim_prune_model
from yoloslim.sparsity.api import sparse_train
from yoloslim.sparsity.compare import checkpoint_gammas

RATIOS = (0.3, 0.5, 0.7)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/slim_sparse")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--base-epochs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10, help="epochs of each continuation (normal and sparse)")
    p.add_argument("--sr", type=float, default=1e-2)
    p.add_argument("--base", default=None, help="reuse this base checkpoint instead of training one")
    p.add_argument("--data", default=None, help="data.yaml of the base model (default: synthesize shapes)")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()

    out = Path(args.out).resolve()
    started = time.perf_counter()
    data = args.data or generate_dataset("shapes", out / "data", n_train=256, n_val=64, imgsz=args.imgsz, seed=0,
                                         show_progress=False)
    common = dict(imgsz=args.imgsz, batch=args.batch, nbs=args.batch, optimizer="SGD", lr0=0.01, warmup_epochs=0,
                  seed=0, deterministic=True, plots=False, val=False, project=out / "runs")
    base = Path(args.base) if args.base else train("yolov8n.yaml", data, epochs=args.base_epochs, name="base",
                                                   **common).last
    normal = train(str(base), data, epochs=args.epochs, name="normal", **common).last
    sparse = sparse_train(str(base), data, sr=args.sr, epochs=args.epochs, name="sparse", **common).last
    rows = []
    for kind, ckpt in (("base", base), ("normal", normal), ("sparse", sparse)):
        model = load_module(str(ckpt))
        gammas = checkpoint_gammas(ckpt)
        p10, p90 = np.percentile(gammas, (10, 90))
        print(f"{kind}: |γ| median {np.median(gammas):.3f}, 10th/90th percentile {p10:.3f}/{p90:.3f}, "
              f"share < 0.1 {(gammas < 0.1).mean():.3f}")
        rows.append({"model": kind, "ratio": 0.0, "gamma_median": float(np.median(gammas)),
                     "gamma_p10": float(p10), "gamma_p90": float(p90),
                     "gamma_share_below_0.1": float((gammas < 0.1).mean()), **validate(model, data, imgsz=args.imgsz)})
        for ratio in RATIOS:
            pruned = slim_prune_model(model, ratio, layer_keep=0.01, imgsz=args.imgsz)
            rows.append({"model": kind, "ratio": ratio, "gflops": round(pruned.gflops, 4),
                         **validate(pruned.model, data, imgsz=args.imgsz)})
    result = {"args": vars(args), "seconds": round(time.perf_counter() - started), "rows": rows}
    atomic_write_bytes(out / "result.json", json.dumps(result, indent=1).encode())
    print("| model | " + " | ".join(f"ratio {r}" for r in (0.0, *RATIOS)) + " |")
    for kind in ("base", "normal", "sparse"):
        values = [f"{r['map50']:.3f} / {r['map50_95']:.3f}" for r in rows if r["model"] == kind]
        print(f"| {kind} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
