"""Silence ultralytics' info messages for one call, where they would mislead or bury our one-line answer."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def ultralytics_warnings_only() -> Iterator[None]:
    """ultralytics logs only warnings and errors inside the block; its level is restored afterwards."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
