"""What a measurement ran on: every published time names its CPU, core count, threads and library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU model as the kernel reports it (``lscpu``'s "Model name"), else what Python knows."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    except OSError:
        lines = []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, logical cores, ``OMP_NUM_THREADS``, and the versions of the libraries that decide the numbers."""
    import onnxruntime
    import torch
    import torch_pruning
    import ultralytics

    return {"nproc": os.cpu_count(), "cpu": cpu_name(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__,
            "torch_pruning": torch_pruning.__version__, "onnxruntime": onnxruntime.__version__}


def describe_machine() -> str:
    """:func:`machine_info` as one line for a benchmark's output."""
    m = machine_info()
    return (f"{m['cpu']}, {m['nproc']} logical CPUs, OMP_NUM_THREADS={m['omp_num_threads'] or 'unset'}, "
            f"Python {m['python']}, torch {m['torch']}, ultralytics {m['ultralytics']}, "
            f"torch-pruning {m['torch_pruning']}, onnxruntime {m['onnxruntime']}")
