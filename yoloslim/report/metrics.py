"""Cost of a model: parameters, GFLOPs, size, and CPU latency (ONNX Runtime and PyTorch).

Latency is measured at batch 1 after a warm-up, as the median of repeated runs, so one slow
run (another process on the machine) does not move it.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs (2 × MACs) of one forward pass at ``imgsz`` × ``imgsz``."""
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(model, imgsz))


def size_mb(model: nn.Module) -> float:
    """Serialized fp16 weights in MB, the convention of ultralytics' released checkpoints."""
    buffer = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, buffer)
    return buffer.tell() / 1e6


def median_ms(fn: Callable[[], Any], warmup: int, runs: int) -> float:
    """Median milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def torch_latency_ms(model: nn.Module, imgsz: int, batch: int = 1, warmup: int = 3, runs: int = 20) -> float:
    model = model.float().eval()
    x = torch.rand(batch, 3, imgsz, imgsz)
    with torch.inference_mode():
        return median_ms(lambda: model(x), warmup, runs)


def onnx_latency_ms(onnx_file: str | Path, imgsz: int, batch: int = 1, warmup: int = 3, runs: int = 20,
                    threads: int | None = None) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)
    return median_ms(lambda: session.run(None, {name: x}), warmup, runs)


def fused_cost(module: nn.Module, imgsz: int) -> tuple[int, float]:
    """(params, GFLOPs) of the deployed form: BatchNorm, RepConv branches and implicit tensors folded into
    convs, as export does. The module itself is left as it is."""
    import copy

    fused = copy.deepcopy(module).float().eval()
    if hasattr(fused, "fuse"):
        fused = fused.fuse(verbose=False)
    return count_params(fused), gflops(fused, imgsz)


def measure(model: str | Path | nn.Module, imgsz: int = 640, latency: bool = True, runs: int = 20) -> dict[str, Any]:
    """Params, GFLOPs (as trained and as deployed), size, ONNX file size and latencies of a checkpoint path or
    module."""
    from yoloslim.engine.export import export_onnx
    from yoloslim.models.load import load_module

    module = load_module(str(model) if isinstance(model, Path) else model)
    stats: dict[str, Any] = {
        "params": count_params(module),
        "gflops": gflops(module, imgsz),
        "size_mb": size_mb(module),
        "imgsz": imgsz,
    }
    stats["params_fused"], stats["gflops_fused"] = fused_cost(module, imgsz)
    if isinstance(model, (str, Path)) and str(model).endswith(".pt"):
        stats["file_mb"] = os.path.getsize(model) / 1e6
    if latency:
        with tempfile.TemporaryDirectory(prefix="yoloslim-latency-") as tmp:
            onnx_file = export_onnx(module, imgsz=imgsz, out=Path(tmp) / "model.onnx", check=False).path
            stats["onnx_mb"] = onnx_file.stat().st_size / 1e6
            stats["latency_ms"] = onnx_latency_ms(onnx_file, imgsz, runs=runs)
        stats["latency_torch_ms"] = torch_latency_ms(module, imgsz, runs=runs)
    return stats
