"""Why the demo overrides ultralytics' training defaults: the same short from-scratch run on the demo's
digits data, stepping the optimizer every 8 images (nbs = batch = 8) vs accumulating to ultralytics'
nominal batch of 64 (batch 16, nbs 64 — 4 batches per step). Everything else is the demo recipe.

    python benchmarks/studies/demo_recipe.py --epochs 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.data import generate_dataset
from yoloslim.demo import DemoPlan
from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.engine.train import train
from yoloslim.engine.validate import validate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--out", default="runs/demo_recipe")
    args = p.parse_args()

    plan, out = DemoPlan(), Path(args.out).resolve()
    data = generate_dataset("digits", out / "data", n_train=plan.n_train, n_val=plan.n_val, imgsz=plan.imgsz,
                            seed=plan.seed, show_progress=False)
    recipe = plan.train_recipe()
    variants = {"step every batch (batch 8, nbs 8)": recipe,
                "accumulate to 64 (batch 16, nbs 64)": {**recipe, "batch": 16, "nbs": 64}}
    rows = []
    for name, settings in variants.items():
        start = time.perf_counter()
        best = train("yolov8n.yaml", data, epochs=args.epochs, imgsz=plan.imgsz, project=out,
                     name=name.split(" (")[0].replace(" ", "-"), **settings).best
        rows.append({"name": name, "seconds": round(time.perf_counter() - start),
                     **validate(best, data, imgsz=plan.imgsz)})
    atomic_write_bytes(out / "result.json", json.dumps(rows, indent=1).encode())
    print("| recipe | mAP50 | mAP50-95 | seconds |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['map50']:.3f} | {r['map50_95']:.3f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
