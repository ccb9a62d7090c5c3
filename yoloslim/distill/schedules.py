"""How strongly the teacher speaks over the run.

A factor in [0, 1] multiplies every distillation term. ``constant`` keeps the teacher at full
weight; ``linear`` and ``cosine`` fade it out so the last iterations optimise the task
loss alone (the student may end up better than its teacher on the task metric that way).
"""

from __future__ import annotations

import math
from typing import Callable

from yoloslim.errors import UserError

SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "linear": lambda progress: 1.0 - progress,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
}


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise UserError(f"unknown distillation schedule {name!r} — choose one of {', '.join(SCHEDULES)}")
    return name


def schedule_factor(name: str, progress: float) -> float:
    """Weight factor at ``progress`` (0 = first iteration, 1 = end of training), clamped to [0, 1]."""
    return SCHEDULES[check_schedule(name)](min(max(progress, 0.0), 1.0))
