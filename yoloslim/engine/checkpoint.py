"""Checkpoint I/O that never leaves a half-written file and keeps pruned models pruned.

A checkpoint is the dict ultralytics expects (``model``/``ema``, ``train_args``, ...) with the
full pickled module, so plain ``ultralytics.YOLO(path)`` loads it. What yoloslim did to a model
(sparse training, pruning, distillation) is recorded on the module itself as the dict attribute
``yoloslim``: it then survives EMA copies, DDP pickling and every ultralytics save/load.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yoloslim.errors import UserError

META_ATTR = "yoloslim"
IMPORTED_KEY = "yoloslim_imported_from"  # set on dicts imported from original YOLOv5 files, never saved


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | Path, trusted: bool | None = None) -> dict:
    """Load a checkpoint dict without running code from it, turning every way it can fail into one clear line.

    Names outside the allowlist (:mod:`yoloslim.engine.safe_load`) are refused unless ``trusted`` (None:
    whether ``--trust-checkpoint`` was given). Checkpoints of the original YOLOv5 repo are imported.
    """
    from yoloslim.engine.safe_load import OriginalYOLOv5Checkpoint, RefusedGlobal, load_torch_file
    from yoloslim.models.original_checkpoints import import_checkpoint

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {str(path)!r} — check the path or train a model first")
    try:
        ckpt = load_torch_file(path, trusted=trusted)
    except OriginalYOLOv5Checkpoint:  # written by the original YOLOv5 repo: its classes exist nowhere here
        return import_checkpoint(path, trusted=trusted)
    except RefusedGlobal as e:
        raise UserError(f"refused to load {path}: {e}, so the file may be unsafe — nothing from it was run; "
                        f"if you trust it, pass --trust-checkpoint to load it anyway") from None
    except ModuleNotFoundError as e:
        raise UserError(
            f"{path} was saved with module {e.name!r}, which is not installed — install the package that "
            f"defines it (e.g. `pip install {str(e.name).split('.')[0]}`) and retry"
        ) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, AttributeError) as e:
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}) — pass a .pt written by "
            f"ultralytics or yoloslim"
        ) from None
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        raise UserError(f"{path} holds no model (expected a dict with 'model' or 'ema') — pass a detector checkpoint")
    return ckpt


def is_imported(ckpt: dict) -> bool:
    """Whether ``read_checkpoint`` imported this from a file of the original YOLOv5 repo (no ultralytics file)."""
    return bool(ckpt.get(IMPORTED_KEY))


def checkpoint_module(ckpt: dict) -> nn.Module:
    """The fp32 model inside a checkpoint (EMA preferred, as ultralytics does)."""
    return (ckpt.get("ema") or ckpt["model"]).float()


def model_meta(model: nn.Module) -> dict:
    return dict(getattr(model, META_ATTR, None) or {})


def record_meta(model: nn.Module, **entries) -> None:
    """Merge ``entries`` into the model's yoloslim record (e.g. ``sparse={...}``)."""
    setattr(model, META_ATTR, {**model_meta(model), **entries})


def yoloslim_meta(ckpt: dict) -> dict:
    return model_meta(ckpt.get("ema") or ckpt["model"])


def save_model_checkpoint(
    model: nn.Module,
    path: str | Path,
    meta: dict | None = None,
    train_args: dict | None = None,
    base: dict | None = None,
) -> Path:
    """Save ``model`` in fp32 as a final (optimizer-free) checkpoint that ``YOLO(path)`` loads.

    ``base`` is an existing checkpoint whose bookkeeping (train args, metrics) is carried over;
    ``meta`` is merged into the model's yoloslim record.
    """
    from copy import deepcopy

    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT

    module = deepcopy(model).float().cpu().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if hasattr(module, "criterion"):
        module.criterion = None
    base = dict(base or {})
    args = {**DEFAULT_CFG_DICT, **(base.get("train_args") or {}), **(train_args or {})}
    if hasattr(module, "args") and not isinstance(module.args, dict):
        module.args = dict(vars(module.args)) if hasattr(module.args, "__dict__") else dict(module.args)
    record_meta(module, **(meta or {}))
    ckpt = {
        **{k: v for k, v in base.items() if k in {"train_metrics", "train_results"}},
        "epoch": -1,
        "best_fitness": None,
        "model": module,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {k: v for k, v in args.items() if k in DEFAULT_CFG_DICT},
        "date": datetime.now(timezone.utc).isoformat(),
        "version": __version__,
    }
    atomic_torch_save(ckpt, path)
    return Path(path)
