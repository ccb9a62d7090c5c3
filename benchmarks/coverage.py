"""Which detectors yoloslim can prune: build each from its yaml, prune to a target, run it.

    python benchmarks/coverage.py [--imgsz 640] [--speed-up 2.0] [--method lamp] [--models yolov8n yolo11n ...]

Each model runs in its own process with a time limit, so one failure or hang cannot stop the
table. Pruning is ``yoloslim.prune.api.prune_model`` with its defaults — the same call as
``yoloslim prune --weights <yaml> --speed-up 2.0`` — so the table shows what users get; the model
then runs forward at ``--imgsz``. Writes docs/COVERAGE.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("yolov3", "yolov3-tiny", "yolov5nu", "yolov6n", "yolov8n", "yolov8n-p2", "yolov8n-p6", "yolov8n-ghost",
          "yolov9t", "yolov9s", "yolov10n", "yolov10s", "yolo11n", "yolo12n", "yolo26n", "rtdetr-l", "rtdetr-resnet50",
          "yolov5n-anchor", "yolov5s-anchor", "yolov7-tiny", "yolov7", "yolov7x")
ROOT = Path(__file__).resolve().parents[1]


def prune_one(name: str, imgsz: int, target: float, method: str) -> dict:
    """Build, prune to ``target`` and run one model; returns a table row."""
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    import torch

    from yoloslim.models import load_module
    from yoloslim.prune.api import prune_model

    started = time.monotonic()
    torch.manual_seed(0)  # ultralytics initialises weights randomly; the table should be reproducible
    result = prune_model(load_module(f"{name}.yaml"), method=method, speed_up=target, imgsz=imgsz)
    with torch.no_grad():
        result.model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    return {
        "model": name, "ok": True, "reached": result.reached, "note": result.note, "speed_up": result.speed_up, "steps": result.steps,
        "params_before": result.base_params, "params_after": result.params, "rewritten": len(result.rewritten),
        "protected": protected_summary(result.protected),
        "seconds": time.monotonic() - started,
    }


def protected_summary(protected: list[tuple[str, str]]) -> list[str]:
    """Prediction layers as one count (a head has 5-13); every other protected module by name and kind."""
    predictions = [n for n, r in protected if r.startswith("prediction layer")]
    others = [f"{n} ({r.split(':')[0].split(' (')[0]})" for n, r in protected if n not in predictions]
    return ([f"{len(predictions)} prediction layers"] if predictions else []) + others


def run_isolated(name: str, args) -> dict:
    command = [sys.executable, __file__, "--one", name, "--imgsz", str(args.imgsz), "--speed-up", str(args.speed_up),
               "--method", args.method]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "ok": False, "error": f"timed out after {args.timeout} s",
                "seconds": time.monotonic() - started}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"model": name, "ok": False, "error": error[:200], "seconds": time.monotonic() - started}


def markdown(rows: list[dict], args) -> str:
    lines = [
        "# Pruning coverage", "",
        f"Every detection model yaml that ultralytics ships, and yoloslim's anchor-based YOLOv5 and YOLOv7, built "
        f"with random weights (nc=80) and pruned with "
        f"`prune_model` (method `{args.method}`, the planner's defaults: global, round_to 8, max_layer_ratio 0.8, "
        f"at most 10 planner rounds) to {args.speed_up}x fewer GFLOPs at {args.imgsz} px — what "
        f"`yoloslim prune --weights <yaml> --method {args.method} --speed-up {args.speed_up} --imgsz {args.imgsz}` "
        f"does — then run forward at {args.imgsz} px. GFLOPs are ultralytics' count (thop, stride-aware "
        f"extrapolation). Seconds include building, rewriting, tracing and planning.",
        "",
        f"Command: `python benchmarks/coverage.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Machine: {platform.processor() or platform.machine()}, {platform.platform()}, Python "
        f"{platform.python_version()}, torch {_version('torch')}, ultralytics {_version('ultralytics')}, "
        f"torch-pruning {_version('torch_pruning')}", "",
        "| model | result | speed-up | planner rounds | params before | params after | rewritten blocks | protected modules "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["ok"]:
            result = "ok" if row["reached"] else f"best reached: {row['note']}"
            lines.append(f"| {row['model']} | {result} | {row['speed_up']:.3f}x | {row['steps']} | "
                         f"{row['params_before']:,} | "
                         f"{row['params_after']:,} | {row['rewritten']} | {', '.join(row['protected'])} | "
                         f"{row['seconds']:.0f} |")
        else:
            lines.append(f"| {row['model']} | FAILED: {row['error'].replace('|', '/')} | | | | | | | "
                         f"{row['seconds']:.0f} |")
    lines += [
        "",
        "\"best reached\": the planner stopped below the target, for the reason given; the CLI's warning then "
        "suggests raising --max-layer-ratio (default 0.8), protecting fewer modules or lowering the target. "
        "\"prediction layers\": the convs whose output channels are the model's output format (box/DFL and "
        "class convs of every level, DFL itself, one2one copies in end-to-end heads), found by walking back "
        "from the outputs; the hidden head convs before them prune. RT-DETR's decoder is kept whole (its "
        "layers share the query width). Attention keeps its inner layers (\"attention inside\": query/key/value "
        "and positional conv, heads × head_dim wide) while its output projection follows the block around it; "
        "where that fails the probe the whole attention is kept (ultralytics' Attention reshapes its values to "
        "the block's input width, see docs/BENCHMARKS.md). "
        "\"rewritten blocks\": chunking blocks replaced by split-free equivalents before tracing.",
    ]
    return "\n".join(lines) + "\n"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--method", default="lamp", help="pruning method (yoloslim's default: lamp)")
    parser.add_argument("--speed-up", type=float, default=2.0)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", default=str(ROOT / "docs" / "COVERAGE.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(prune_one(args.one, args.imgsz, args.speed_up, args.method)))
        return 0
    rows = []
    for name in args.models:
        rows.append(run_isolated(name, args))
        row = rows[-1]
        print(f"{name}: " + (f"{row['speed_up']:.2f}x in {row['seconds']:.0f} s" if row["ok"] else row["error"]),
              flush=True)
    sys.path.insert(0, str(ROOT))
    from yoloslim.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(args.out), markdown(rows, args).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
