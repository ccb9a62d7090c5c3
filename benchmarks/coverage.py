"""Which ultralytics detectors yoloslim can prune: build each from its yaml, prune to a target, run it.

    python benchmarks/coverage.py [--imgsz 640] [--mac-imgsz 128] [--speed-up 2.0] [--models yolov8n yolo11n ...]

Each model runs in its own process with a time limit, so one failure or hang cannot stop the
table. Pruning is a plain loop — torch-pruning's MetaPruner with L1 magnitude, global, small
steps — and the speed-up (MACs before / after) is recounted after each step. Counting at
``--imgsz`` every step is slow, and a count at one small size misleads: conv MACs grow with
pixels (s²), attention MACs with pixels squared (s⁴), and RT-DETR's decoder queries cost the
same at any size. So MACs are counted at three small sizes (``--mac-imgsz`` × 1, 1.5, 2) and
the exact polynomial A + B·s² + C·s⁴ through them is evaluated at ``--imgsz``; the final
speed-up is a real count at ``--imgsz``. Writes docs/COVERAGE.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("yolov3", "yolov3-tiny", "yolov5nu", "yolov6n", "yolov8n", "yolov8n-p2", "yolov8n-p6", "yolov8n-ghost",
          "yolov9t", "yolov9s", "yolov10n", "yolov10s", "yolo11n", "yolo12n", "yolo26n", "rtdetr-l", "rtdetr-resnet50")
ROOT = Path(__file__).resolve().parents[1]
STEPS = 60  # MetaPruner iterative steps towards a 0.9 channel ratio: ~1.5% of channels per step
MAX_RATIO = 0.9


def _macs(model, imgsz: int) -> float:
    import thop
    import torch

    probe_input = torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device)
    macs, _ = thop.profile(copy.deepcopy(model).eval(), inputs=(probe_input,), verbose=False)
    return float(macs)


def _predicted_macs(model, imgsz: int, small: int) -> float:
    """MACs at ``imgsz`` from counts at three small sizes (see the module docstring)."""
    import numpy as np

    sizes = [round(small * factor / 64) * 64 for factor in (1.0, 1.5, 2.0)]
    scaled = np.array([(size / imgsz) ** 2 for size in sizes])
    terms = np.stack([np.ones(3), scaled, scaled**2], axis=1)
    coefficients = np.linalg.solve(terms, np.array([_macs(model, size) for size in sizes]))
    return float(coefficients.sum())


def prune_one(name: str, imgsz: int, mac_imgsz: int, target: float) -> dict:
    """Build, prepare, prune to ``target`` and run one model; returns a table row."""
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    import torch
    import torch_pruning as tp

    from yoloslim.models import load_module
    from yoloslim.prune import prepare_for_pruning

    started = time.monotonic()
    torch.manual_seed(0)  # ultralytics initialises weights randomly; the table should be reproducible
    model = load_module(f"{name}.yaml")
    params_before = sum(p.numel() for p in model.parameters())
    prepared = prepare_for_pruning(model, imgsz=64)
    base = _macs(model, imgsz)
    pruner = tp.pruner.MetaPruner(
        model, prepared.example_inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=MAX_RATIO,
        iterative_steps=STEPS, global_pruning=True, ignored_layers=prepared.ignored_layers,
        forward_fn=prepared.forward_fn,
    )
    steps = 0
    while steps < STEPS and base / _predicted_macs(model, imgsz, mac_imgsz) < target:
        pruner.step()
        steps += 1
    while steps < STEPS and base / _macs(model, imgsz) < target:  # only if the prediction was off
        pruner.step()
        steps += 1
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz))
    return {
        "model": name, "ok": True, "speed_up": base / _macs(model, imgsz), "steps": steps,
        "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters()),
        "rewritten": len(prepared.rewritten),
        "protected": [f"{n} ({r.split(':')[0].split(' (')[0]})" for n, r in prepared.protected],
        "seconds": time.monotonic() - started,
    }


def run_isolated(name: str, args) -> dict:
    command = [sys.executable, __file__, "--one", name, "--imgsz", str(args.imgsz), "--mac-imgsz",
               str(args.mac_imgsz), "--speed-up", str(args.speed_up)]
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
        f"Every detection model yaml that ultralytics ships, built with random weights (nc=80), prepared with "
        f"`prepare_for_pruning`, pruned with torch-pruning's MetaPruner (L1 magnitude, global) towards "
        f"{args.speed_up}x fewer MACs (steps of ~{MAX_RATIO / STEPS:.1%} of the channels, at most {STEPS}), then run "
        f"forward at {args.imgsz} px. After each step the loop needs MACs at {args.imgsz} px; it counts them (thop) "
        f"at three small sizes from {args.mac_imgsz} px and evaluates the polynomial A + B·s² + C·s⁴ through them "
        f"at {args.imgsz} px (convs grow with s², attention with s⁴, RT-DETR's decoder queries not at all; a "
        f"single small size would be wrong: yolo12n has 28.5x the MACs at 640 px as at 128 px, rtdetr-l 12x, not "
        f"25x). The speed-up below is a real count at {args.imgsz} px. This is a plain loop, not the yoloslim "
        f"planner. Seconds include building, tracing and MAC counting.",
        "",
        f"Command: `python benchmarks/coverage.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Machine: {platform.processor() or platform.machine()}, {platform.platform()}, Python "
        f"{platform.python_version()}, torch {_version('torch')}, ultralytics {_version('ultralytics')}, "
        f"torch-pruning {_version('torch_pruning')}", "",
        "| model | result | speed-up | steps | params before | params after | rewritten blocks | protected modules "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["ok"]:
            result = "ok" if row["speed_up"] >= args.speed_up else "best reached"
            lines.append(f"| {row['model']} | {result} | {row['speed_up']:.3f}x | {row['steps']} | "
                         f"{row['params_before']:,} | "
                         f"{row['params_after']:,} | {row['rewritten']} | {', '.join(row['protected'])} | "
                         f"{row['seconds']:.0f} |")
        else:
            lines.append(f"| {row['model']} | FAILED: {row['error'].replace('|', '/')} | | | | | | | "
                         f"{row['seconds']:.0f} |")
    lines += [
        "",
        f"\"best reached\": the loop ended ({STEPS} steps, {MAX_RATIO:.0%} of the prunable channels) below the "
        "target. Protected modules bound what pruning can remove: heads are protected whole, hidden head convs "
        "included, so a model whose head holds about half of its MACs (the stride-4 head of yolov8n-p2) cannot "
        "reach 2x. \"rewritten blocks\": chunking blocks replaced by split-free equivalents before tracing.",
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
    parser.add_argument("--mac-imgsz", type=int, default=128)
    parser.add_argument("--speed-up", type=float, default=2.0)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", default=str(ROOT / "docs" / "COVERAGE.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(prune_one(args.one, args.imgsz, args.mac_imgsz, args.speed_up)))
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
