"""ONNX export through ultralytics' exporter, checked against PyTorch in ONNX Runtime."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yoloslim.engine.quiet import ultralytics_warnings_only
from yoloslim.errors import UserError

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    output_scale: float = float("nan")  # the largest |PyTorch output| the difference was measured on


def _stage_checkpoint(model: str | Path | nn.Module, folder: Path) -> Path:
    """Our own copy of the model for ultralytics' exporter, which loads its input with its unrestricted loader:
    it only ever reads a file that yoloslim wrote from a module read with the allowlisting unpickler (this
    also turns original YOLOv5 files into ours)."""
    from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint

    base = None if isinstance(model, nn.Module) else read_checkpoint(model)
    module = model if base is None else checkpoint_module(base)
    folder.mkdir()
    return save_model_checkpoint(module, folder / "model.pt", base=base)


def export_onnx(model: str | Path | nn.Module, imgsz: int = 640, out: str | Path | None = None,
                check: bool = True, opset: int | None = None, batch: int = 1) -> ExportResult:
    """Export to ONNX (fp32, static ``batch`` × 3 × imgsz × imgsz, simplified by onnxslim as ultralytics does);
    compare with PyTorch when ``check``.

    ``out`` defaults to the checkpoint's path with ``.onnx``; the file appears only when complete.
    """
    from yoloslim.models.load import load_model

    with tempfile.TemporaryDirectory(prefix="yoloslim-export-") as tmp:
        staged = _stage_checkpoint(model, Path(tmp) / "stage")
        wrapper = load_model(str(staged))
        try:
            with ultralytics_warnings_only():  # its closing hints name the staging file, gone afterwards
                onnx_file = Path(wrapper.export(format="onnx", imgsz=imgsz, batch=batch, simplify=True,
                                                dynamic=False, opset=opset, verbose=False))
        except Exception as e:
            raise UserError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]} — "
                            f"protect or remove the offending layer and retry") from None
        diff, scale = compare_with_pytorch(wrapper.model, onnx_file, imgsz, batch=batch) if check else (
            float("nan"), float("nan"))
        target = Path(out) if out else (Path(model).with_suffix(".onnx") if not isinstance(model, nn.Module)
                                        else Path.cwd() / "model.onnx")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(onnx_file, target.with_name(f".{target.name}.tmp"))
        target.with_name(f".{target.name}.tmp").replace(target)
    return ExportResult(path=target, max_abs_diff=diff, output_scale=scale)


def _exported_outputs(out) -> list[np.ndarray]:
    """The eval-mode outputs an ONNX export writes, in order. ultralytics heads return them alone (a classifier's
    probabilities), or first in a pair with the raw head outputs: one tensor (detect, pose, obb) or a
    list (segment: predictions and mask prototypes)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    tensors = list(out) if isinstance(out, (list, tuple)) else [out]
    return [t.detach().cpu().float().numpy() for t in tensors]


def compare_with_pytorch(module: nn.Module, onnx_file: str | Path, imgsz: int, seed: int = 0,
                         batch: int = 1) -> tuple[float, float]:
    """Largest absolute difference between PyTorch and ONNX Runtime over every exported output, on one random
    batch, and the largest absolute PyTorch output (boxes are in pixels, so a difference reads against it).

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
        reference = _exported_outputs(module(x))
    exported = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    shapes = [tuple(o.shape) for o in exported], [tuple(r.shape) for r in reference]
    if shapes[0] != shapes[1]:
        raise UserError(f"ONNX output shapes {shapes[0]} differ from PyTorch {shapes[1]} — "
                        "export is inconsistent; report this model")
    diff = max(float(np.abs(o - r).max()) for o, r in zip(exported, reference))
    return diff, max(float(np.abs(r).max()) for r in reference)
