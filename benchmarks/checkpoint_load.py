"""What loading a checkpoint through the allowlisting unpickler costs, against ultralytics' unrestricted load.

For each model (built from yaml, saved the way yoloslim saves checkpoints), the two loaders take turns
``--repeats`` times in one process, so drift from other load on the machine hits both alike; the table shows
the medians and the median of the per-turn ratios.

    OMP_NUM_THREADS=2 python benchmarks/checkpoint_load.py --models yolov8n.yaml rtdetr-l.yaml --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.engine.checkpoint import read_checkpoint, save_model_checkpoint
from yoloslim.models.load import build_from_yaml
from yoloslim.report.machine import describe_machine


def _seconds(load: Callable[[], object]) -> float:
    started = time.perf_counter()
    load()
    return time.perf_counter() - started


def measure(yaml_name: str, repeats: int, folder: Path) -> dict[str, float]:
    from ultralytics.utils.patches import torch_load

    path = save_model_checkpoint(build_from_yaml(yaml_name, nc=80), folder / f"{Path(yaml_name).stem}.pt")
    unrestricted = lambda: torch_load(path, map_location="cpu", weights_only=False)  # noqa: E731
    restricted = lambda: read_checkpoint(path)  # noqa: E731
    restricted(), unrestricted()  # warm the imports and the page cache
    pairs = [(_seconds(unrestricted), _seconds(restricted)) for _ in range(repeats)]
    return {"mb": path.stat().st_size / 1e6,
            "unrestricted_ms": 1e3 * statistics.median(p[0] for p in pairs),
            "restricted_ms": 1e3 * statistics.median(p[1] for p in pairs),
            "ratio": statistics.median(r / u for u, r in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov8n.yaml", "rtdetr-l.yaml"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    print("| model | file MB | ultralytics torch_load ms | yoloslim read_checkpoint ms | median ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            r = measure(name, args.repeats, Path(folder))
            print(f"| {name} | {r['mb']:.1f} | {r['unrestricted_ms']:.1f} | {r['restricted_ms']:.1f} | "
                  f"{r['ratio']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
