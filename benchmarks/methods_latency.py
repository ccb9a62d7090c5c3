"""Re-measure the ONNX Runtime latency of every finished row of a methods run, all rows in turn.

``methods.py`` times each row when it finishes, so rows measured while other work shared the machine
are not comparable with rows measured on a quiet one. This script exports every row's best.pt once per
size and then times the models round-robin: each round times every model once (median of ``--runs``
after warm-up), and the table shows the median over ``--rounds`` rounds. Drift on the machine then
hits every row alike. Run it alone, after the methods run has finished.

    OMP_NUM_THREADS=1 python benchmarks/methods_latency.py --out runs/benchmarks/methods-full --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods_lib import write_json  # noqa: E402

import yoloslim  # noqa: E402,F401  (configures ultralytics before it is imported)
from yoloslim.errors import UserError  # noqa: E402
from yoloslim.report.machine import machine_info  # noqa: E402


def finished_rows(out: Path) -> list[dict]:
    """Every row of the run's latest plan (baseline first) whose weights still exist."""
    plans = sorted(out.glob("cache/rows-*"), key=lambda folder: folder.stat().st_mtime)
    if not plans:
        raise UserError(f"{out} holds no methods run — run benchmarks/methods.py --out {out} first")
    rows = []
    for path in sorted(plans[-1].glob("row-*.json")):
        value = json.loads(path.read_text())["value"]
        if Path(value["weights"]).is_file():
            rows.append(value)
    if not rows:
        raise UserError(f"{plans[-1]} has no finished rows with weights — let benchmarks/methods.py finish first")
    return sorted(rows, key=lambda r: (not r["name"].startswith("BaseLine"), r["name"]))


def remeasure(rows: list[dict], sizes: list[int], rounds: int, runs: int, threads: int) -> dict[str, dict]:
    from yoloslim.engine.export import export_onnx
    from yoloslim.report.metrics import onnx_latency_ms

    times: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="yoloslim-latency-") as tmp:
        files = {}
        for i, row in enumerate(tqdm(rows, desc="export")):
            for size in sizes:
                files[row["name"], size] = export_onnx(row["weights"], imgsz=size, check=False,
                                                       out=Path(tmp) / f"{i}-{size}.onnx").path
        for _ in tqdm(range(rounds), desc="rounds"):
            for (name, size), onnx_file in files.items():
                times.setdefault((name, size), []).append(onnx_latency_ms(onnx_file, size, runs=runs,
                                                                          threads=threads))
    result: dict[str, dict] = {}
    for (name, size), values in times.items():
        result.setdefault(name, {})[f"latency_{size}_b1_ms"] = statistics.median(values)
    return result


def table(rows: list[dict], measured: dict[str, dict], sizes: list[int]) -> str:
    base = rows[0]
    lines = ["| model | GFLOPs speed-up | " + " | ".join(f"{s} px ms | {s} px speed-up | ratio to GFLOPs"
                                                         for s in sizes) + " |",
             "|---|---:|" + "---:|---:|---:|" * len(sizes)]
    for row in rows:
        flops = base["gflops"] / row["gflops"]
        cells = []
        for s in sizes:
            key = f"latency_{s}_b1_ms"
            speed = measured[base["name"]][key] / measured[row["name"]][key]
            cells.append(f"{measured[row['name']][key]:.1f} | {speed:.2f}x | {speed / flops:.2f}")
        lines.append(f"| {row['name']} | {flops:.2f}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the methods run's --out folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[640], help="input sizes, batch 1")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model and round (after warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    try:
        out = Path(args.out)
        rows = finished_rows(out)
        measured = remeasure(rows, args.sizes, args.rounds, args.runs, args.threads)
    except UserError as e:
        print(f"methods_latency: error: {e}", file=sys.stderr)
        return 2
    text = table(rows, measured, args.sizes)
    write_json(out / "latency-remeasured.json", {"machine": machine_info(), "args": vars(args), "rows": measured})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
