"""Read checkpoints written by the original YOLOv5 repo's train.py (v6.0-v7.0) without running code from them.

Such a file pickles the whole model under ``models.yolo``/``models.common`` classes, which exist in no installed
package. It is read with yoloslim's allowlisting unpickler (:mod:`yoloslim.engine.safe_load`: tensors and numpy
values through their rebuild functions, plain containers and paths, nothing else callable) with one layer on
top: the original's model classes and torch's layer classes become inert placeholders that only record the
state the pickle hands them. Any other name — ``os.system`` in a crafted file, or a block from a modified
fork — stops the load before anything is called.

From the placeholders we take ``yaml`` (the full model dict), ``names``, ``nc`` and the weights (``ema``
when the file has one, else ``model``), build our model from the dict, check that both have the same
layers, and load the weights strictly.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from yoloslim.engine.safe_load import (
    ORIGINAL_YOLOV5_PACKAGE,
    CheckpointUnpickler,
    RefusedGlobal,
    load_torch_file,
    trusted_by_default,
)
from yoloslim.errors import UserError
from yoloslim.models.yolov5.model import YOLOv5DetectionModel

MODEL_CLASSES = ("models.yolo.DetectionModel", "models.yolo.Model")  # v6.2+, and v6.0/v6.1
ORIGINAL_CLASSES = (*MODEL_CLASSES, "models.yolo.Detect", "models.common.Conv", "models.common.C3",
                    "models.common.Bottleneck", "models.common.SPPF", "models.common.Concat")
TORCH_LAYERS = "torch.nn.modules."
OUR_NAME_FOR = {"Detect": "AnchorDetect"}  # original class name -> ours, where they differ
BUFFER_RENAMES = {"anchors": "anchor_wh"}  # Detect buffer names, original -> ours (see head.py)
SHOWN = 3  # how many differences an error message lists


class Pickled:
    """Stand-in for a class the file names: keeps the state the pickle gives it and runs nothing else."""

    source = ""

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}

    @property
    def children(self) -> dict:
        return dict(self.state.get("_modules") or {})


_PLACEHOLDERS: dict[str, type[Pickled]] = {}


def _placeholder(full_name: str) -> type[Pickled]:
    if full_name not in _PLACEHOLDERS:
        _PLACEHOLDERS[full_name] = type(full_name.rsplit(".", 1)[1], (Pickled,), {"source": full_name})
    return _PLACEHOLDERS[full_name]


class RestrictedUnpickler(CheckpointUnpickler):
    """yoloslim's allowlisting unpickler with the original's layers and torch's layers as placeholders."""

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in ORIGINAL_CLASSES or module.startswith(TORCH_LAYERS):
            return _placeholder(full)
        if module.split(".")[0] == ORIGINAL_YOLOV5_PACKAGE:
            raise RefusedGlobal(full, f"it uses the class {full}, which the yolov5 family does not know (a "
                                      f"modified fork?) — only v6.0-v7.0 layers (Conv, C3, Bottleneck, SPPF, "
                                      f"Concat, Detect) can be imported")
        return super().find_class(module, name)


class TrustedRestrictedUnpickler(RestrictedUnpickler):
    trusted = True


def is_original_checkpoint(path: str | Path) -> bool:
    """Whether a file is a torch checkpoint naming ``models.*`` classes (read statically, nothing is unpickled)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError):
        return False
    return any(n.split(".")[0] == ORIGINAL_YOLOV5_PACKAGE for n in names)


def _read(path: Path, trusted: bool | None) -> dict:
    unpickler = TrustedRestrictedUnpickler if (trusted_by_default() if trusted is None else trusted) \
        else RestrictedUnpickler
    try:
        raw = load_torch_file(path, unpickler=unpickler)
    except RefusedGlobal as e:
        if e.name.split(".")[0] == ORIGINAL_YOLOV5_PACKAGE:
            raise UserError(f"{path} was not imported: {e}") from None
        raise UserError(f"refused to import {path}: {e}, so the file may be unsafe — nothing from it was run; if you "
                        f"trust it, pass --trust-checkpoint to load it anyway") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, ImportError) as e:
        raise UserError(f"{path} is not a readable YOLOv5 checkpoint ({type(e).__name__}) — pass a best.pt/last.pt "
                        f"written by the YOLOv5 repo's train.py") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a training checkpoint — pass a best.pt/last.pt "
                        f"written by the YOLOv5 repo's train.py")
    return raw


def _source_model(raw: dict, path: Path) -> tuple[Pickled, str]:
    """The pickled model to import: the EMA when the file still has one (a run in progress), else ``model``."""
    key = "ema" if raw.get("ema") is not None else "model"
    source = raw.get(key)
    if not isinstance(source, Pickled) or source.source not in MODEL_CLASSES:
        found = getattr(source, "source", type(source).__name__)
        raise UserError(f"{path}: '{key}' holds {found}, not a YOLOv5 model ({' or '.join(MODEL_CLASSES)})")
    if not isinstance(source.state.get("yaml"), dict):
        raise UserError(f"{path}: the model carries no 'yaml' dict, so its architecture is unknown — re-save it with "
                        f"the YOLOv5 repo's train.py")
    return source, key


def _walk(node: Pickled, prefix: str = ""):
    """(dotted name, placeholder) for every module in the pickled tree, shared modules at each place they occur."""
    yield prefix, node
    for name, child in node.children.items():
        if isinstance(child, Pickled):
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def _check_layers(source: Pickled, model: nn.Module, path: Path) -> None:
    """Same module names, and the same classes at each (torch layers included), apart from the root."""
    theirs = {name: OUR_NAME_FOR.get(type(node).__name__, type(node).__name__) for name, node in _walk(source) if name}
    ours = {name: type(m).__name__ for name, m in model.named_modules(remove_duplicate=False) if name}
    differences = [f"{n} is {theirs.get(n, 'absent')} in the file but {ours.get(n, 'absent')} here"
                   for n in list(ours) + [n for n in theirs if n not in ours] if theirs.get(n) != ours.get(n)]
    if differences:
        raise UserError(f"{path}: the pickled model differs from what its yaml builds ({len(differences)} "
                        f"difference(s), e.g. {'; '.join(differences[:SHOWN])}) — was the model changed after it "
                        f"was built from its yaml?")


def _weights(source: Pickled) -> dict[str, torch.Tensor]:
    """The state dict of the pickled tree (persistent buffers only), in fp32, under our names."""
    weights = {}
    for prefix, node in _walk(source):
        skip = set(node.state.get("_non_persistent_buffers_set") or ())
        is_head = node.source == "models.yolo.Detect"
        tensors = {**(node.state.get("_parameters") or {}),
                   **{k: v for k, v in (node.state.get("_buffers") or {}).items() if k not in skip}}
        for name, tensor in tensors.items():
            if tensor is not None:
                name = BUFFER_RENAMES.get(name, name) if is_head else name
                key = f"{prefix}.{name}" if prefix else name
                weights[key] = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
    return weights


def _load_strictly(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [f"{k} is {tuple(weights[k].shape)} in the file but {tuple(v.shape)} here"
                 for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if problems:
        raise UserError(f"{path}: the weights do not fit the architecture its yaml describes ({len(problems)} "
                        f"mismatch(es), e.g. {'; '.join(problems[:SHOWN])})")
    model.load_state_dict(weights, strict=True)


def _class_names(names, nc: int, path: Path) -> dict[int, str]:
    if names is None:
        return {i: str(i) for i in range(nc)}
    table = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
    if len(table) != nc:
        raise UserError(f"{path}: the model has {nc} classes but {len(table)} class names")
    return {int(k): str(v) for k, v in table.items()}


def import_checkpoint(path: str | Path, trusted: bool | None = None) -> dict:
    """A yoloslim checkpoint dict (``model`` = our fp32 module, ``ema`` None) from an original YOLOv5 file.

    ``trusted`` lets names outside the allowlist resolve normally (``--trust-checkpoint``); the original's
    own classes are placeholders either way, since no installed package defines them.
    """
    from yoloslim.engine.checkpoint import IMPORTED_KEY, record_meta

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {str(path)!r} — check the path")
    raw = _read(path, trusted)
    source, key = _source_model(raw, path)
    cfg = source.state["yaml"]
    nc = int(source.state.get("nc") or cfg.get("nc") or 0)
    model = YOLOv5DetectionModel(cfg, ch=int(cfg.get("ch", 3)), nc=nc, verbose=False)
    _check_layers(source, model, path)
    _load_strictly(model, _weights(source), path)
    model.names = _class_names(source.state.get("names"), model.model[-1].nc, path)
    model.eval()
    record_meta(model, imported={"source": str(path.resolve()), "class": source.source, "weights": key,
                                 "epoch": raw.get("epoch"), "date": raw.get("date")})
    return {"model": model, "ema": None, IMPORTED_KEY: str(path.resolve())}
