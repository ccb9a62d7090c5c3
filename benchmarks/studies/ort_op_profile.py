"""Where ONNX Runtime spends its time, by operator type, for two or more checkpoints at one input size.

Answers why a pruned model's latency speed-up falls short of its GFLOPs speed-up: operators whose cost the
pruning does not touch (DFL's softmax, activations on the wide early maps) show up as a floor.

    OMP_NUM_THREADS=1 python benchmarks/studies/ort_op_profile.py base.pt pruned.pt --imgsz 640 --runs 13
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.engine.export import export_onnx
from yoloslim.report.machine import describe_machine


def op_milliseconds(weights: str, imgsz: int, runs: int, threads: int, folder: Path) -> dict[str, float]:
    """Kernel time per operator type, in ms per run (ONNX Runtime's own profiler, CPU provider)."""
    import onnxruntime as ort

    onnx_file = export_onnx(weights, imgsz=imgsz, out=folder / f"{Path(weights).parent.parent.name}.onnx",
                            check=False).path
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "profile")
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return dict(per_op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="checkpoints to compare (the first is the reference)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=13)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="operator types to list")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="yoloslim-opprof-") as tmp:
        results = {w: op_milliseconds(w, args.imgsz, args.runs, args.threads, Path(tmp)) for w in args.weights}
    ops = sorted(results[args.weights[0]], key=lambda op: -results[args.weights[0]][op])[:args.top]
    print("| checkpoint | total ms | " + " | ".join(ops) + " |")
    print("|---|---:|" + "---:|" * len(ops))
    for w, per_op in results.items():
        print(f"| {w} | {sum(per_op.values()):.1f} | " + " | ".join(f"{per_op.get(op, 0.0):.1f}" for op in ops) + " |")


if __name__ == "__main__":
    main()
