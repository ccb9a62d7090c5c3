"""Unpickle checkpoints without running code from them.

A ``.pt`` file is a pickle, and a pickle can name any importable callable and have it called while loading
(``os.system`` with a command, say). ``torch.load(weights_only=True)`` stops that but refuses every model
class, and ultralytics loads with ``weights_only=False``. This unpickler sits in between: it resolves the
names a file refers to through an allowlist, so loading can only

* rebuild tensors, parameters and numpy arrays/scalars through their own rebuild functions,
* make plain containers and value types (dicts, sets, ``torch.Size``, ``torch.device``, paths, tensor
  subclasses, numpy dtypes, enums),
* fetch a layer's own ``forward``/``forward_fuse`` (fused layers pickle it by name) and enum members,
* name immutable constants of torch, ultralytics, yoloslim and numpy (``torch.float32``),
* create instances of classes from torch, ultralytics, yoloslim and torchvision.transforms (every layer and
  model class, a classifier's preprocessing) the way
  unpickling does — allocated, then given their saved state — without ever running their constructors:
  a file that tries to call one with arguments (``AutoBackend("other.pt")`` would load another file) is
  refused.

Anything else stops the load at that name, before anything is called, with :class:`RefusedGlobal`.
Trusted loading (``--trust-checkpoint``) resolves every name normally, as ``torch.load`` does.

Names are resolved once per distinct global of a file (the pickle memoizes them), and the unpickler stays
the C implementation, so a restricted load costs what an unrestricted one does.
Checkpoints of the original YOLOv5 repo name ``models.*`` classes, which exist in no installed package;
the first such name raises :class:`OriginalYOLOv5Checkpoint`, and the caller imports the file with
:mod:`yoloslim.models.original_checkpoints`, whose unpickler layers placeholders on top of this one.
"""

from __future__ import annotations

import collections
import enum
import importlib
import os
import pathlib
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRUST_ENV = "YOLOSLIM_TRUST_CHECKPOINT"  # set by --trust-checkpoint; inherited by DDP workers
TRUSTED_PACKAGES = ("torch", "ultralytics", "yoloslim")
CONSTANT_PACKAGES = (*TRUSTED_PACKAGES, "numpy")
# A classifier carries its preprocessing (``model.transforms``, torchvision's Compose/Resize/...) for prediction.
TRUSTED_MODULES = ("torchvision.transforms",)
ORIGINAL_YOLOV5_PACKAGE = "models"

# Modules and names that older ultralytics releases pickled and later moved; the same mapping ultralytics
# applies when it loads, so old checkpoints keep loading.
MOVED_MODULES = {
    "ultralytics.yolo.utils": "ultralytics.utils",
    "ultralytics.yolo.v8": "ultralytics.models.yolo",
    "ultralytics.yolo.data": "ultralytics.data",
}
MOVED_NAMES = {
    "ultralytics.nn.modules.block.Silence": ("torch.nn", "Identity"),
    "ultralytics.nn.tasks.YOLOv10DetectionModel": ("ultralytics.nn.tasks", "DetectionModel"),
    "ultralytics.utils.loss.v10DetectLoss": ("ultralytics.utils.loss", "E2EDetectLoss"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The file names something outside the allowlist; ``str()`` is the reason, ``name`` the global."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name


class OriginalYOLOv5Checkpoint(Exception):
    """The file pickles classes of the original YOLOv5 repo (``models.yolo``/``models.common``)."""


def trusted_by_default() -> bool:
    """Whether ``--trust-checkpoint`` is in force for this process (and the workers it starts)."""
    return os.environ.get(TRUST_ENV, "") == "1"


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (text in latin-1), and for nothing else."""
    if encoding not in {"latin1", "latin-1"}:
        raise RefusedGlobal("_codecs.encode", f"its pickle calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _module_attribute(obj: Any, name: str) -> Any:
    """``getattr`` as checkpoints use it, and no further: a fused layer pickles its ``forward`` as
    ``getattr(layer, "forward_fuse")``, and enum members may be pickled by name."""
    if isinstance(obj, torch.nn.Module) and name in {"forward", "forward_fuse"}:
        return getattr(type(obj), name).__get__(obj)
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and name in obj.__members__:
        return obj[name]
    raise RefusedGlobal("builtins.getattr", f"its pickle calls getattr({type(obj).__name__}, {name!r})")


def _path_class(flavour: str) -> type:
    """A saved path of this machine's flavour comes back as a Path, the other flavour as a pure path."""
    native = "posix" if os.name == "posix" else "windows"
    if flavour == native:
        return pathlib.Path
    return pathlib.PurePosixPath if flavour == "posix" else pathlib.PureWindowsPath


def _numpy_core() -> types.ModuleType:
    return getattr(np, "_core", None) or np.core


def _allowed_callables() -> dict[str, Any]:
    """Functions and classes a checkpoint may *call*: rebuilds, containers and value types."""
    rebuild = {name: getattr(torch._utils, name) for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state") if hasattr(torch._utils, name)}
    allowed: dict[str, Any] = {f"torch._utils.{name}": fn for name, fn in rebuild.items()}
    allowed["torch._tensor._rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2
    for cls in (torch.Size, torch.device, torch.Tensor, torch.nn.Parameter):
        allowed[f"{cls.__module__}.{cls.__name__}"] = cls
    for module in ("builtins", "__builtin__"):  # protocol 2 writes Python 2's module name
        for cls in (set, frozenset, list, dict, tuple, bytearray, bytes, str, int, float, bool, complex, slice, range):
            allowed[f"{module}.{cls.__name__}"] = cls
    for cls in (collections.OrderedDict, collections.defaultdict, collections.Counter, collections.deque):
        allowed[f"collections.{cls.__name__}"] = cls
    allowed["types.SimpleNamespace"] = types.SimpleNamespace
    allowed["builtins.getattr"] = allowed["__builtin__.getattr"] = _module_attribute
    allowed["_codecs.encode"] = _latin1
    core = _numpy_core()
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[f"{module}._reconstruct"] = core.multiarray._reconstruct
        allowed[f"{module}.scalar"] = core.multiarray.scalar
    allowed["numpy.ndarray"], allowed["numpy.dtype"] = np.ndarray, np.dtype
    for module in ("pathlib", "pathlib._local"):
        allowed[f"{module}.PosixPath"] = _path_class("posix")
        allowed[f"{module}.WindowsPath"] = _path_class("windows")
        allowed[f"{module}.PurePosixPath"] = pathlib.PurePosixPath
        allowed[f"{module}.PureWindowsPath"] = pathlib.PureWindowsPath
    return allowed


ALLOWED_CALLABLES = _allowed_callables()
# Values a file may name directly (``torch.float32``): immutable, so a pickle cannot change them in place.
CONSTANT_TYPES = (torch.dtype, torch.memory_format, torch.layout, torch.qscheme, np.dtype, enum.Enum,
                  bool, int, float, complex, str, bytes, type(None))
_WITHOUT_CONSTRUCTOR: dict[type, type] = {}


def _without_constructor(cls: type) -> type:
    """A stand-in type that unpickling can instantiate but that never runs ``cls.__init__``.

    Unpickling creates objects of a class with ``cls.__new__(cls)`` (the NEWOBJ opcode) and then sets their
    state; only a crafted file calls the class itself (REDUCE). Both reach this type's ``__new__``, which
    returns a bare instance of the real class — so ``__init__`` is skipped either way — and refuses any
    constructor arguments.
    """
    if cls not in _WITHOUT_CONSTRUCTOR:
        full = f"{cls.__module__}.{cls.__qualname__}"

        def allocate(_stand_in, *args, **kwargs):
            if args or kwargs:
                raise RefusedGlobal(full, f"its pickle calls {full} with arguments (a constructor call)")
            return cls.__new__(cls)

        _WITHOUT_CONSTRUCTOR[cls] = type(cls.__name__, (), {"__new__": allocate, "__module__": cls.__module__})
    return _WITHOUT_CONSTRUCTOR[cls]


def _is_value_class(obj: type) -> bool:
    """Classes whose call only builds a value: tensors (rebuild functions pass them), numpy dtypes, enums."""
    return issubclass(obj, (torch.Tensor, np.dtype, np.generic, enum.Enum))


class CheckpointUnpickler(pickle.Unpickler):
    """``find_class`` through the allowlist (see the module docstring); ``trusted`` resolves everything."""

    trusted = False

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if module.split(".")[0] == ORIGINAL_YOLOV5_PACKAGE:
            raise OriginalYOLOv5Checkpoint(full)
        if full in MOVED_NAMES:
            module, name = MOVED_NAMES[full]
        module = next((new + module[len(old):] for old, new in MOVED_MODULES.items()
                       if module == old or module.startswith(old + ".")), module)
        if self.trusted:
            return super().find_class(module, name)
        if full in ALLOWED_CALLABLES:
            return ALLOWED_CALLABLES[full]
        return self._resolve_restricted(module, name, full)

    def _resolve_restricted(self, module: str, name: str, full: str):
        trusted_module = any(module == m or module.startswith(m + ".") for m in TRUSTED_MODULES)
        package = module if trusted_module else module.split(".")[0]
        if (package not in CONSTANT_PACKAGES and not trusted_module) or "." in name:
            raise RefusedGlobal(full, f"its pickle references {full}, which no model checkpoint needs")
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise RefusedGlobal(full, f"its pickle references {full}, which the installed {package} does not "
                                      f"have (saved with another version?)") from None
        if isinstance(obj, CONSTANT_TYPES):
            return obj  # such as torch.float32 or torch.contiguous_format
        if isinstance(obj, type) and _is_value_class(obj):
            return obj
        if isinstance(obj, type) and (package in TRUSTED_PACKAGES or trusted_module):
            return _without_constructor(obj)
        raise RefusedGlobal(full, f"its pickle references {full}, which no model checkpoint needs")


class TrustedCheckpointUnpickler(CheckpointUnpickler):
    trusted = True


def pickle_module(unpickler: type[pickle.Unpickler]) -> types.ModuleType:
    """What ``torch.load(pickle_module=...)`` expects: a module-like object with ``Unpickler`` and ``load``."""
    module = types.ModuleType(f"yoloslim_{unpickler.__name__}")
    module.Unpickler = unpickler
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()
    return module


_MODULES = {False: pickle_module(CheckpointUnpickler), True: pickle_module(TrustedCheckpointUnpickler)}


def load_torch_file(path: str | Path, trusted: bool | None = None, unpickler: type | None = None) -> Any:
    """``torch.load`` onto the CPU through the allowlisting unpickler (or ``unpickler``, e.g. the importer's).

    ``trusted`` None follows ``--trust-checkpoint`` (:data:`TRUST_ENV`). Raises :class:`RefusedGlobal`,
    :class:`OriginalYOLOv5Checkpoint`, or whatever ``torch.load`` raises for a broken file.
    """
    if trusted is None:
        trusted = trusted_by_default()
    module = pickle_module(unpickler) if unpickler is not None else _MODULES[bool(trusted)]
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
