"""Finetune one pruned student three ways with equal epochs: plain, yoloslim distillation from the
unpruned teacher, and ultralytics' built-in ``distill_model`` option; validate each the same way.

    python benchmarks/studies/distill_compare.py --teacher BASE.pt --student PRUNED.pt --data DATA.yaml --epochs 8 --imgsz 128

`yoloslim demo` leaves suitable inputs in runs/demo (baseline/weights/best.pt, pruned.pt, digits-*/data.yaml).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.demo import DemoPlan
from yoloslim.distill.api import distill
from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.engine.train import train
from yoloslim.engine.validate import validate
from yoloslim.report.metrics import count_params
from yoloslim.models import load_module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--out", default="runs/distill_compare")
    args = p.parse_args()

    out = Path(args.out).resolve()
    recipe = DemoPlan().train_recipe()
    common = dict(epochs=args.epochs, imgsz=args.imgsz, project=out, **recipe)
    runs = {
        "plain finetune": lambda: train(args.student, args.data, name="plain", **common),
        "yoloslim distill (l2 + cwd)": lambda: distill(args.student, args.data, teacher=args.teacher, logit="l2",
                                                        feature="cwd", name="yoloslim", **common),
        "ultralytics distill_model": lambda: train(args.student, args.data, name="ultralytics",
                                                   distill_model=args.teacher, **common),
    }
    rows = [{"name": "teacher (unpruned)", "params": count_params(load_module(args.teacher)),
             **validate(args.teacher, args.data, imgsz=args.imgsz)},
            {"name": "student before finetune", "params": count_params(load_module(args.student)),
             **validate(args.student, args.data, imgsz=args.imgsz)}]
    for name, run in runs.items():
        start = time.perf_counter()
        best = run().best
        rows.append({"name": name, "seconds": round(time.perf_counter() - start, 1),
                     "params": count_params(load_module(str(best))), **validate(best, args.data, imgsz=args.imgsz)})
        print(json.dumps(rows[-1]), flush=True)
    atomic_write_bytes(out / "distill_compare.json", json.dumps({"args": vars(args), "rows": rows}, indent=2).encode())
    print("| run | params | mAP50 | mAP50-95 | seconds |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['map50']:.3f} | {r['map50_95']:.3f} | {r.get('seconds', '')} |")


if __name__ == "__main__":
    main()
