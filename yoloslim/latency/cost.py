"""Milliseconds as the planner's cost: aim at a measured latency speed-up instead of a GFLOPs one.

The prediction of a candidate pruning is the latency table's estimate at the new widths plus a residual,
re-measured every round (the whole model's measured latency minus the table's estimate for its current
widths), so the next round corrects what the table missed. Channels are ranked by the method's importance
alone (``rank="importance"``, the default) or by importance per millisecond (``rank="per-ms"``: each group's
scores divided by the milliseconds one of its channels saves). Per millisecond lost on the digits benchmark:
at 640 px the early high-resolution layers cost the most per channel, so they were cut to their floor and the
model finetuned to 0.235 mAP50-95 against 0.474 with the importance ranking (docs/BENCHMARKS.md).

The search scans the ranking for the first pruning predicted under the goal (latency is not monotone in the
channels removed), gives pruned channels back, the most important first, while the prediction stays within the
goal, and lets a group keep more channels wherever the table says that is no slower (widths the runtime handles
well). The speed-up is base / pruned latency, both timed alternately in one process, median of ``runs``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from yoloslim.latency.runtimes import DEFAULT_RUNTIME, Runtime
from yoloslim.latency.table import LatencyTable, current_widths
from yoloslim.prune.planner import (GlobalRanking, GroupPlan, Prediction, counts_at_ratio, counts_below,
                                   removed_channels, rounded_count)

if TYPE_CHECKING:
    from yoloslim.prune.planner import Planner

MIN_MS_PER_CHANNEL = 1e-6  # a channel that saves nothing measurable goes last, not first
SCAN_STEPS = 1000  # candidate prunings along the ranking (the first one under the goal is taken)
RANKINGS = ("importance", "per-ms")


@dataclass(frozen=True)
class LatencyTarget:
    """How ``prune_model`` measures a latency speed-up: on which runtime, with how many threads, at which
    batch, from how many alternated runs, where its latency tables are cached (None: not cached), and how
    channels are ranked (see the module docstring)."""

    runtime: str = DEFAULT_RUNTIME
    threads: int = 1
    batch: int = 1
    runs: int = 20
    cache: Path | None = None
    rank: str = "importance"


@dataclass
class LatencyPrediction:
    """Milliseconds of the model after a candidate pruning (per-group counts)."""

    plans: list[GroupPlan]
    table: LatencyTable
    widths: dict[str, tuple[int, int]]
    residual_ms: float

    def __call__(self, counts: list[int]) -> float:
        removed = removed_channels(self.plans, counts)
        after = dict(self.widths)
        for name in {name for name, _ in removed}:
            if name in after:
                cin, cout = after[name]
                after[name] = (cin - removed.get((name, "in"), 0.0), cout - removed.get((name, "out"), 0.0))
        return self.residual_ms + self.table.model_estimate(after)


def per_millisecond(plans: list[GroupPlan], predict: Callable[[list[int]], float],
                    round_to: int | None) -> list[GroupPlan]:
    """The plans with each group's scores divided by the milliseconds one of its channels saves."""
    untouched = predict([0] * len(plans))
    ranked = []
    for i, plan in enumerate(plans):
        count = rounded_count(plan, max(round_to or 1, len(plan.order) // 2), round_to)
        counts = [0] * len(plans)
        counts[i] = count
        saved = (untouched - predict(counts)) / count if count else 0.0
        ranked.append(replace(plan, scores=plan.scores / max(saved, MIN_MS_PER_CHANNEL)))
    return ranked


def first_crossing(plans: list[GroupPlan], predict: Callable[[list[int]], float], goal: float, global_pruning: bool,
                   round_to: int | None, steps: int = SCAN_STEPS) -> list[int]:
    """The least pruning along the ranking predicted to reach ``goal``, found by scanning: latency is not
    monotone in the channels removed (a width the runtime handles badly can be slower than a wider one), so the
    bisection the GFLOPs planner uses could stop past the first point that reaches the goal."""
    if global_pruning:
        ranking = GlobalRanking(plans)
        candidates = [counts_below(plans, ranking, n, round_to)
                      for n in sorted({round(len(ranking) * i / steps) for i in range(steps + 1)})]
    else:
        candidates = [counts_at_ratio(plans, i / steps, round_to) for i in range(steps + 1)]
    return next((counts for counts in candidates if predict(counts) <= goal), candidates[-1])


def give_back(plans: list[GroupPlan], counts: list[int], predict: Callable[[list[int]], float], goal: float,
              round_to: int | None) -> list[int]:
    """Restore pruned channels, the most important first (``round_to`` at a time), while the prediction stays
    within ``goal``: where the first pruning to reach the goal jumps past it (a width that crosses an alignment
    step can save several milliseconds at once), the slack goes back to accuracy."""
    step = round_to or 1
    counts = list(counts)
    while True:
        candidates = sorted((float(plan.scores[counts[i] - 1]), i) for i, plan in enumerate(plans)
                            if counts[i] > 0 and plan.ch_groups == 1)
        for _, i in reversed(candidates):
            trial = counts[:i] + [max(0, counts[i] - step)] + counts[i + 1:]
            if predict(trial) <= goal:
                counts = trial
                break
        else:
            return counts


def prefer_faster_widths(plans: list[GroupPlan], counts: list[int], predict: Callable[[list[int]], float],
                         round_to: int | None, reach: int = 4) -> list[int]:
    """Let each group keep up to ``reach`` more multiples of ``round_to`` where the table predicts no slower model."""
    step = round_to or 1
    counts = list(counts)
    for i, plan in enumerate(plans):
        if not counts[i] or plan.ch_groups != 1:
            continue
        limit = predict(counts) + 1e-9
        for fewer in range(counts[i] - step, max(-1, counts[i] - reach * step - 1), -step):
            trial = counts[:i] + [max(fewer, 0)] + counts[i + 1:]
            if predict(trial) <= limit:
                counts = trial
    return counts


@dataclass
class LatencyCost:
    """The planner's cost in milliseconds on ``runtime`` (see the module docstring)."""

    planner: Planner
    table: LatencyTable
    runtime: Runtime
    batch: int = 1
    runs: int = 20
    target: float | None = None
    rank: str = "importance"
    exact: bool = False
    base: float = field(init=False)
    _measured: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, init=False)
    _last: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.base = self.table.model_ms

    def predictor(self, model: nn.Module, plans: list[GroupPlan], flops: Prediction) -> LatencyPrediction:
        widths = current_widths(model, self.table)
        now = self._measured.get(model, self.base)  # a fresh copy was never measured: it is the base
        return LatencyPrediction(plans, self.table, widths, now - self.table.model_estimate(widths))

    def choose(self, plans: list[GroupPlan], predict: Callable[[list[int]], float], goal: float,
               global_pruning: bool, round_to: int | None) -> list[int]:
        ranked = per_millisecond(plans, predict, round_to) if self.rank == "per-ms" else plans
        counts = first_crossing(ranked, predict, goal, global_pruning, round_to)
        counts = give_back(ranked, counts, predict, goal, round_to)
        counts = prefer_faster_widths(ranked, counts, predict, round_to)
        self._last["predicted_ms"] = predict(counts)
        return counts

    def measure(self, model: nn.Module) -> float:
        """The pruned model's latency on the scale of ``base``: base × pruned / base as timed side by side now."""
        base_ms, pruned_ms = self.runtime.compare(self.planner.prunable.model, model, self.planner.imgsz, self.batch,
                                                  self.runs)
        value = self.base * pruned_ms / base_ms
        self._measured[model] = value
        self._last.update(base_ms=base_ms, ms=pruned_ms, measured_speed_up=base_ms / pruned_ms)
        return value

    def describe(self, value: float) -> str:
        return f"{self._last['ms']:.2f} ms measured (base {self._last['base_ms']:.2f} ms)"

    def details(self) -> dict[str, Any]:
        predicted = self._last.get("predicted_ms")
        return {"latency": {
            **self.runtime.key(), "imgsz": self.planner.imgsz, "batch": self.batch, "runs": self.runs,
            "rank": self.rank,
            "target_speed_up": self.target,
            "base_ms": self._last.get("base_ms"), "ms": self._last.get("ms"),
            "measured_speed_up": self._last.get("measured_speed_up"),
            "predicted_ms": None if predicted is None else predicted * self._last["base_ms"] / self.base,
            "predicted_speed_up": None if predicted is None else self.base / predicted,
            "table": str(self.table.path) if self.table.path else None,
            "table_seconds": round(self.table.seconds, 1), "table_reused": self.table.reused,
            "table_samples": self.table.samples, "table_scale": self.table.scale,
        }}
