"""ONNX export through ultralytics' exporter, checked against PyTorch in ONNX Runtime."""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yoloslim.errors import UserError

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float


@contextmanager
def _quiet_exporter():
    """The exporter's closing hints name the temporary staging file, which is gone afterwards."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _as_checkpoint(model: str | Path | nn.Module, workdir: Path) -> Path:
    """A checkpoint ultralytics' exporter can load: modules and original YOLOv5 files are saved as ours first."""
    from yoloslim.models.yolov5.importer import is_original_checkpoint

    if isinstance(model, nn.Module) or is_original_checkpoint(model):
        from yoloslim.engine.checkpoint import save_model_checkpoint
        from yoloslim.models.load import load_module

        return save_model_checkpoint(load_module(model), workdir / "model.pt")
    return Path(model)


def export_onnx(model: str | Path | nn.Module, imgsz: int = 640, out: str | Path | None = None,
                check: bool = True, opset: int | None = None, batch: int = 1) -> ExportResult:
    """Export to ONNX (fp32, static ``batch`` × 3 × imgsz × imgsz); compare with PyTorch when ``check``.

    ``out`` defaults to the checkpoint's path with ``.onnx``; the file appears only when complete.
    """
    from yoloslim.models.load import load_model

    with tempfile.TemporaryDirectory(prefix="yoloslim-export-") as tmp:
        tmp = Path(tmp)
        ckpt = _as_checkpoint(model, tmp)
        staged = tmp / "stage" / "model.pt"
        staged.parent.mkdir()
        shutil.copyfile(ckpt, staged)
        wrapper = load_model(str(staged))
        try:
            with _quiet_exporter():
                onnx_file = Path(wrapper.export(format="onnx", imgsz=imgsz, batch=batch, simplify=False,
                                                dynamic=False, opset=opset, verbose=False))
        except Exception as e:
            raise UserError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]} — "
                            f"protect or remove the offending layer and retry") from None
        diff = max_abs_diff(wrapper.model, onnx_file, imgsz, batch=batch) if check else float("nan")
        target = Path(out) if out else (Path(model).with_suffix(".onnx") if not isinstance(model, nn.Module)
                                        else Path.cwd() / "model.onnx")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(onnx_file, target.with_name(f".{target.name}.tmp"))
        target.with_name(f".{target.name}.tmp").replace(target)
    return ExportResult(path=target, max_abs_diff=diff)


def _flat_first_output(out) -> np.ndarray:
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out.detach().cpu().float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def max_abs_diff(module: nn.Module, onnx_file: str | Path, imgsz: int, seed: int = 0, batch: int = 1) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime on one random batch.

    The exporter fuses Conv+BN, so the reference is the fused module too: the check then
    measures the export, not the (legitimate) rounding difference of fusing.
    """
    import onnxruntime as ort

    from copy import deepcopy

    module = deepcopy(module).float().eval()
    if hasattr(module, "fuse"):
        module = module.fuse(verbose=False)
    x = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        reference = _flat_first_output(module(x))
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if onnx_out.shape != reference.shape:
        raise UserError(f"ONNX output shape {onnx_out.shape} differs from PyTorch {reference.shape} — "
                        "export is inconsistent; report this model")
    return float(np.abs(onnx_out - reference).max())
