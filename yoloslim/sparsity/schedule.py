"""How the penalty coefficient changes over a run.

``progress`` is the fractional position in the run (0 at the first step, 1 at the end), so
coefficients change smoothly every optimizer step instead of jumping at epoch boundaries.
"""

from __future__ import annotations

import math

from yoloslim.errors import UserError

SCHEDULES = ("linear", "constant", "cosine")
FINAL_FRACTION = 0.1  # linear and cosine end at 10% of sr (the network-slimming seeds' decay)


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise UserError(f"unknown --sr-schedule {schedule!r} — choose one of {', '.join(SCHEDULES)}")
    return schedule


def sr_at(sr: float, schedule: str, progress: float) -> float:
    """The coefficient at ``progress`` ∈ [0, 1]: linear is ``sr * (1 - 0.9 * progress)``."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return sr
    if schedule == "linear":
        return sr * (1.0 - (1.0 - FINAL_FRACTION) * p)
    if schedule == "cosine":
        return sr * (FINAL_FRACTION + (1.0 - FINAL_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * p)))
    raise UserError(f"unknown --sr-schedule {schedule!r} — choose one of {', '.join(SCHEDULES)}")
