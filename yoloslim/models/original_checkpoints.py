"""Read checkpoints written by the original YOLOv5 (v6.0-v7.0) and YOLOv7 repos' train.py without running code
from them.

Such a file pickles the whole model under ``models.yolo``/``models.common`` classes, which exist in no installed
package. It is read with yoloslim's allowlisting unpickler (:mod:`yoloslim.engine.safe_load`: tensors and numpy
values through their rebuild functions, plain containers and paths, nothing else callable) with one layer on
top: the original's model classes and torch's layer classes become inert placeholders that only record the
state the pickle hands them. Any other name — ``os.system`` in a crafted file, or a block from a modified
fork or a model this project does not build (YOLOv7's IAuxDetect) — stops the load before anything is called.

Both repos use the same module names, so which family a file belongs to is read from the ``yaml`` dict its
model carries. Each family states what its files may contain in a :class:`Dialect` (``models/yolov5`` and
``models/yolov7``'s ``importer.py``). From the placeholders we take ``yaml``, ``names``, ``nc`` and the weights
(``ema`` when the file has one, else ``model``; YOLOv7's ``init.pt`` is the bare model), build our model from
the dict, check that both have the same layers, and load the weights strictly.
"""

from __future__ import annotations

import functools
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

MODEL_CLASSES = ("models.yolo.DetectionModel", "models.yolo.Model")  # YOLOv5 v6.2+; YOLOv5 v6.0/v6.1 and YOLOv7
TORCH_LAYERS = "torch.nn.modules."
BUFFER_RENAMES = {"anchors": "anchor_wh"}  # head buffer names, original -> ours (see models/yolov5/head.py)
DERIVED_BUFFERS = ("anchor_grid",)  # YOLOv7 heads keep anchors in pixels too; ours derive them from the strides
ANCHOR_GRID_TOLERANCE = 1e-2  # fp16 files: anchor_grid and anchors·stride agree to a few thousandths
SHOWN = 3  # how many differences an error message lists


@dataclass(frozen=True)
class Dialect:
    """What one family's original checkpoints contain: the ``models.*`` classes, its head classes (original
    name -> ours), and a rewrite of the pickled tree into our module layout where the two differ."""

    family: str
    classes: tuple[str, ...]
    heads: dict[str, str]
    to_our_layout: Callable[[Pickled], bool] = field(default=lambda tree: False)


@functools.cache
def _dialects() -> dict[str, Dialect]:
    from yoloslim.models.yolov5.importer import YOLOV5_DIALECT
    from yoloslim.models.yolov7.importer import YOLOV7_DIALECT

    return {d.family: d for d in (YOLOV5_DIALECT, YOLOV7_DIALECT)}


@functools.cache
def _known_classes() -> frozenset[str]:
    """Asked once per name a pickle refers to, so built once."""
    return frozenset(name for d in _dialects().values() for name in d.classes)


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


def make_placeholder(full_name: str, modules: dict | None = None) -> Pickled:
    """A placeholder built by a dialect's layout rewrite (a module the file holds under another shape)."""
    node = _placeholder(full_name)()
    node.state = {"_modules": dict(modules or {})}
    return node


class RestrictedUnpickler(CheckpointUnpickler):
    """yoloslim's allowlisting unpickler with the originals' layers and torch's layers as placeholders."""

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in _known_classes() or module.startswith(TORCH_LAYERS):
            return _placeholder(full)
        if module.split(".")[0] == ORIGINAL_YOLOV5_PACKAGE:
            raise RefusedGlobal(full, f"it uses the class {full}, which yoloslim does not build (a modified fork, "
                                      f"or a model such as YOLOv7's w6/e6/d6/e6e with IAuxDetect?) — only YOLOv5 "
                                      f"v6.0-v7.0 and YOLOv7 tiny/base/x layers can be imported")
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
        raise UserError(f"{path} is not a readable YOLOv5/YOLOv7 checkpoint ({type(e).__name__}) — pass a "
                        f"best.pt/last.pt written by the original repo's train.py") from None
    if isinstance(raw, Pickled) and raw.source in MODEL_CLASSES:
        return {"model": raw}  # YOLOv7's init.pt: the bare model, before any training
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a training checkpoint — pass a best.pt/last.pt "
                        f"written by the original repo's train.py")
    return raw


def _source_model(raw: dict, path: Path) -> tuple[Pickled, str]:
    """The pickled model to import: the EMA when the file still has one (a run in progress), else ``model``."""
    key = "ema" if raw.get("ema") is not None else "model"
    source = raw.get(key)
    if not isinstance(source, Pickled) or source.source not in MODEL_CLASSES:
        found = getattr(source, "source", type(source).__name__)
        raise UserError(f"{path}: '{key}' holds {found}, not a YOLOv5/YOLOv7 model ({' or '.join(MODEL_CLASSES)})")
    if not isinstance(source.state.get("yaml"), dict):
        raise UserError(f"{path}: the model carries no 'yaml' dict, so its architecture is unknown — re-save it with "
                        f"the original repo's train.py")
    return source, key


def _walk(node: Pickled, prefix: str = ""):
    """(dotted name, placeholder) for every module in the pickled tree, shared modules at each place they occur."""
    yield prefix, node
    for name, child in node.children.items():
        if isinstance(child, Pickled):
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)


def _check_layers(source: Pickled, model: nn.Module, dialect: Dialect, path: Path) -> None:
    """Same module names, and the same classes at each (torch layers included), apart from the root."""
    theirs = {name: dialect.heads.get(type(node).__name__, type(node).__name__)
              for name, node in _walk(source) if name}
    ours = {name: type(m).__name__ for name, m in model.named_modules(remove_duplicate=False) if name}
    differences = [f"{n} is {theirs.get(n, 'absent')} in the file but {ours.get(n, 'absent')} here"
                   for n in list(ours) + [n for n in theirs if n not in ours] if theirs.get(n) != ours.get(n)]
    if differences:
        raise UserError(f"{path}: the pickled model differs from what its yaml builds ({len(differences)} "
                        f"difference(s), e.g. {'; '.join(differences[:SHOWN])}) — was the model changed after it "
                        f"was built from its yaml?")


def _weights(source: Pickled, dialect: Dialect) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict of the pickled tree under our names in fp32, the head buffers ours derive instead of storing)."""
    weights, derived = {}, {}
    heads = {f"models.yolo.{name}" for name in dialect.heads}
    for prefix, node in _walk(source):
        skip = set(node.state.get("_non_persistent_buffers_set") or ())
        is_head = node.source in heads
        tensors = {**(node.state.get("_parameters") or {}),
                   **{k: v for k, v in (node.state.get("_buffers") or {}).items() if k not in skip}}
        for name, tensor in tensors.items():
            if tensor is None:
                continue
            tensor = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
            if is_head and name in DERIVED_BUFFERS:
                derived[name] = tensor
                continue
            name = BUFFER_RENAMES.get(name, name) if is_head else name
            weights[f"{prefix}.{name}" if prefix else name] = tensor
    return weights, derived


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


def _check_anchor_grid(model: nn.Module, derived: dict[str, torch.Tensor], path: Path) -> None:
    """YOLOv7 files also store the anchors in pixels; they must be what ours derive from anchors and strides."""
    grid = derived.get("anchor_grid")
    if grid is None:
        return
    head = model.model[-1]
    expected = head.anchor_wh * head.stride.view(-1, 1, 1)
    if grid.numel() != expected.numel() or not torch.allclose(grid.view_as(expected), expected,
                                                              rtol=ANCHOR_GRID_TOLERANCE):
        raise UserError(f"{path}: the head's anchor_grid does not equal its anchors times the strides — the file's "
                        f"head was edited by hand; re-save it with the original repo")


def _class_names(names, nc: int, path: Path) -> dict[int, str]:
    if names is None:
        return {i: str(i) for i in range(nc)}
    table = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
    if len(table) != nc:
        raise UserError(f"{path}: the model has {nc} classes but {len(table)} class names")
    return {int(k): str(v) for k, v in table.items()}


def _fuse_repconvs(model: nn.Module) -> None:
    """Put our RepConv layers in deploy form, to receive a file whose RepConvs were reparameterized."""
    from ultralytics.nn.modules import RepConv

    for module in model.modules():
        if isinstance(module, RepConv):
            module.fuse_convs()
            module.forward = module.forward_fuse


def import_checkpoint(path: str | Path, trusted: bool | None = None) -> dict:
    """A yoloslim checkpoint dict (``model`` = our fp32 module, ``ema`` None) from an original YOLOv5/v7 file.

    ``trusted`` lets names outside the allowlist resolve normally (``--trust-checkpoint``); the originals'
    own classes are placeholders either way, since no installed package defines them.
    """
    from yoloslim.engine.checkpoint import IMPORTED_KEY, record_meta
    from yoloslim.models.anchor_specs import anchor_model_class, family_of

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {str(path)!r} — check the path")
    raw = _read(path, trusted)
    source, key = _source_model(raw, path)
    cfg = source.state["yaml"]
    dialect = _dialects()[family_of(cfg)]
    fused = dialect.to_our_layout(source)
    nc = int(source.state.get("nc") or cfg.get("nc") or 0)
    model = anchor_model_class(cfg)(cfg, ch=int(cfg.get("ch", 3)), nc=nc, verbose=False)
    if fused:
        _fuse_repconvs(model)
    _check_layers(source, model, dialect, path)
    weights, derived = _weights(source, dialect)
    _load_strictly(model, weights, path)
    _check_anchor_grid(model, derived, path)
    model.names = _class_names(source.state.get("names"), model.model[-1].nc, path)
    model.eval()
    record_meta(model, imported={"source": str(path.resolve()), "class": source.source, "family": dialect.family,
                                 "weights": key, "epoch": raw.get("epoch"), "date": raw.get("date")})
    return {"model": model, "ema": None, IMPORTED_KEY: str(path.resolve())}
