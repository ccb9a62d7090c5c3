"""Which device to train and validate on when the user does not say: a GPU when there is one.

ultralytics picks CUDA when it is available; so do we, and we say which device was chosen, once per
choice and process, so that nobody trains on the CPU without noticing. An explicit ``--device`` (``cpu``,
``0``, ``0,1`` for DDP) is passed on untouched.
"""

from __future__ import annotations

from typing import Callable

_announced: set[str] = set()


def _log(message: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(message)


def default_device() -> str:
    """``"0"`` (the first CUDA device) when torch sees one, else ``"cpu"``."""
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | int | None, log: Callable[[str], None] = _log) -> str:
    """``device`` as given, or :func:`default_device` (announced through ``log`` the first time it is chosen)."""
    if device is not None and str(device).strip() != "":
        return str(device)
    chosen = default_device()
    if chosen not in _announced:
        _announced.add(chosen)
        log("device: CUDA device 0 (no --device given; pass --device cpu to use the CPU)" if chosen != "cpu"
            else "device: cpu (no CUDA device found; no --device given)")
    return chosen
