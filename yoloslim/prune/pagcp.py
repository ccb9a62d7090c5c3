"""PAGCP (Ye et al., "Performance-aware Approximation of Global Channel Pruning for Multitask CNNs",
TPAMI 2023) on torch-pruning dependency groups, for every model the planner handles, to a speed-up.

A *unit* is a prunable dependency group of the prepared model (prediction layers never prune), so
residual, concat and split coupling come with it; its channels are ranked by the L1 norm of their
filter weights summed over the group. One round:

1. measure each task's loss on the calibration batches (the base), and visit the units in order of
   the GFLOPs that removing 30% of each would save, largest first;
2. for each unit, on the model as pruned so far, keep the largest ratio of the grid 0.05 … 0.95 below
   the first one at which some task's loss exceeds (1 + d) × its base, and note that task. The grid
   is searched by galloping, then bisection, which assumes the loss grows with the ratio; the
   planner's limits apply (``max_layer_ratio`` caps it, ``round_to`` rounds it to distinct channel
   counts). Then d ← d·λ and base ← max(base, loss), at every unit, pruned or not; with ``exp`` λ
   solves ∏_{i<L} (1 + d₀·λ^i) = T, else λ = 1;
3. score each pruned unit by its loss increase per GFLOP removed and keep only the best ``topk``
   share of all units, applied to the model the round started from.

A candidate is measured on a deep copy pruned by replaying the unit's group (``replay.py``): one
traced graph per round, none per candidate. Rounds repeat on the pruned model, with base losses
measured afresh, until the speed-up is in [target, 1.05 × target]. A round that would overshoot
keeps fewer of its units instead: the best-scored prefix, its last unit cut back to the grid ratio
that lands, predicted with the planner's per-layer MACs and checked by counting.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.planner import (FIRST_AIM, WINDOW, GroupPlan, Planner, PlanOutcome, Prediction, count_gflops,
                                    counts_at_ratio, plan_group, pruned_idxs)
from yoloslim.prune.replay import prune_copy
from yoloslim.prune.task_losses import TaskLosses

RATIO_GRID = tuple(k / 20 for k in range(1, 20))  # 0.05, 0.10, ..., 0.95
PROBE_RATIO = 0.3  # share of a unit removed to weigh its GFLOPs (the visiting order)
LANDING_ATTEMPTS = 3  # prefixes tried when a round would overshoot the window


@dataclass(frozen=True)
class PagcpSettings:
    """The loss bounds; the defaults are the official README command (``--initial_rate 0.06
    --initial_thres 6. --topk 0.8 --exp``)."""

    rate: float = 0.06  # d₀: the relative growth any task's loss may take at the first unit
    thres: float = 6.0  # T: with ``exp``, the product of (1 + d) over a round's units
    topk: float = 0.8  # share of all units whose pruning a round keeps (the least loss per GFLOP)
    exp: bool = True  # shrink d by λ after every unit so that the product is T; off: d stays d₀

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise UserError(f"--pagcp-rate must be greater than 0 (the loss growth allowed at the first unit), "
                            f"got {self.rate}")
        if not 0 < self.topk <= 1:
            raise UserError(f"--pagcp-topk must be in (0, 1] (the share of units kept pruned), got {self.topk}")
        if self.exp and not self.thres > 1 + self.rate:
            raise UserError(f"--pagcp-thres must be greater than 1 + --pagcp-rate ({1 + self.rate:g}) with "
                            f"--pagcp-exp, got {self.thres}")


def _log_factor(rate: float, lam: float, i: int) -> float:
    """log(1 + rate·lam^i), without overflow for large lam^i."""
    x = math.log(rate) + i * math.log(lam)
    return x + math.log1p(math.exp(-x)) if x > 30 else math.log1p(math.exp(x))


def solve_lambda(rate: float, thres: float, units: int) -> float:
    """λ > 0 with ∏_{i<units} (1 + rate·λ^i) = thres (bisection); 1.0 for fewer than two units, where λ
    changes nothing. Needs thres > 1 + rate."""
    if units < 2:
        return 1.0
    goal = math.log(thres)

    def excess(lam: float) -> float:
        return sum(_log_factor(rate, lam, i) for i in range(units)) - goal

    lo, hi = 0.0, 1.0
    while excess(hi) < 0:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-15 * hi:
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def unit_bounds(settings: PagcpSettings, units: int) -> tuple[float, list[float]]:
    """λ and the d of each unit in visiting order: d₀·λ^i."""
    lam = solve_lambda(settings.rate, settings.thres, units) if settings.exp else 1.0
    return lam, [settings.rate * lam ** i for i in range(units)]


def worst_task(losses: dict[str, float], base: dict[str, float]) -> tuple[str, float]:
    """The task whose loss grew most relative to its base, and by which factor (a zero base counts as
    no growth while the loss stays zero)."""
    def factor(task: str) -> float:
        if base[task] > 0:
            return losses[task] / base[task]
        return 1.0 if losses[task] <= 0 else math.inf

    task = max(base, key=factor)
    return task, factor(task)


@dataclass
class UnitDecision:
    """What one visit of one unit decided."""

    round: int
    visit: int
    unit: str  # the group's root layer
    channels: int  # per channel block, at the visit
    removed: int  # channels the greedy search accepted
    breaking_task: str | None  # the task whose loss first broke its bound (None: the grid ended first)
    threshold: float  # d at this unit
    base: dict[str, float]  # the running base losses it was judged against
    losses: dict[str, float]  # task losses after it, at its accepted ratio
    probe_gflops: float  # GFLOPs that removing PROBE_RATIO of it saves: the visiting order
    gflops_drop: float  # GFLOPs its accepted ratio saved after the units before it
    score: float | None  # loss increase per GFLOP saved (the top-P ranking); None when unpruned
    options: list[int]  # its candidate channel counts, ascending
    plan: GroupPlan  # its channel ranking at the visit
    index: int  # its position in the round's GFLOPs prediction
    applied: int = 0  # channels removed in the round's result (after top-P and landing)

    def record(self) -> dict[str, Any]:
        """The report's row (``ratio`` is the share of the unit's channels the greedy search accepted)."""
        return {"round": self.round, "visit": self.visit, "unit": self.unit, "channels": self.channels,
                "ratio": round(self.removed / self.channels, 4), "removed": self.removed, "applied": self.applied,
                "breaking_task": self.breaking_task, "threshold": self.threshold, "base": self.base,
                "losses": self.losses, "probe_gflops": self.probe_gflops, "gflops_drop": self.gflops_drop,
                "score": self.score if self.score is not None and math.isfinite(self.score) else None}


class PagcpPlanner:
    """PAGCP rounds on copies of a prepared model; ``base`` (the threshold planner) supplies the copies,
    the traced graphs, the per-layer GFLOPs prediction and the counting."""

    def __init__(self, base: Planner, losses: TaskLosses, settings: PagcpSettings | None = None) -> None:
        self.base, self.losses = base, losses
        self.settings = settings or PagcpSettings()
        self.records: list[dict[str, Any]] = []  # every unit's decision, for the report
        self.lambdas: list[float] = []

    @property
    def initial(self) -> dict[str, int]:
        return self.base.initial

    def to_speed_up(self, target: float, max_steps: int) -> PlanOutcome:
        """Rounds until base/pruned GFLOPs is in [target, target × WINDOW], at most ``max_steps`` of them."""
        model, previous, note, number = self.base.fresh_copy(), self.base.base_gflops, "", 0
        for number in range(1, max_steps + 1):
            started = time.perf_counter()
            model, now = self._round(model, number, target)
            reached = self.base.base_gflops / now
            self.base.log(f"pagcp round {number}: {now:.2f} GFLOPs, speed-up {reached:.3f}x "
                          f"({time.perf_counter() - started:.1f} s)")
            if target <= reached <= target * WINDOW:
                return self._finish(model, number, reached=True)
            if reached > target * WINDOW:
                note = f"round {number} could not stop inside the window: its smallest unit steps jump past it"
                break
            if now >= previous:
                note = self._stall_note(number)
                break
            previous = now
        else:
            note = f"--max-steps {max_steps} rounds were used up"
        return self._finish(model, number, reached=False, note=note)

    def _stall_note(self, number: int) -> str:
        """Why round ``number`` removed nothing."""
        if not any(record["round"] == number for record in self.records):
            return f"no layer has channels left to prune within --max-layer-ratio {self.base.max_layer_ratio}"
        return (f"round {number} pruned nothing: no layer stayed within its loss bound at the smallest ratio "
                f"(raise --pagcp-rate or --pagcp-thres)")

    def _finish(self, model: nn.Module, rounds: int, reached: bool, note: str = "") -> PlanOutcome:
        details = {"pagcp": {**asdict(self.settings), "lambda": [round(lam, 8) for lam in self.lambdas]},
                   "units": self.records}
        return replace(self.base.finish(model, rounds, reached, note), details=details)

    def _round(self, model: nn.Module, number: int, target: float) -> tuple[nn.Module, float]:
        """One greedy pass over the units of a copy of ``model``, then top-P (and landing) on ``model``."""
        work = copy.deepcopy(model)
        graph, plans, predict = self.base.analyse(work, number)
        units = [i for i, plan in enumerate(plans) if self._options(graph, plan)]
        probe = {i: predict.gflops_now - predict(_only(i, counts_at_ratio([plans[i]], PROBE_RATIO,
                                                                           self.base.round_to)[0], len(plans)))
                 for i in units}
        order = sorted(units, key=lambda i: -probe[i])  # stable: model order among equal savings
        decisions = self._greedy(work, graph, plans, order, probe, predict, number)
        ranked = sorted((d for d in decisions if d.removed), key=lambda d: d.score)
        kept = ranked[:math.floor(self.settings.topk * len(decisions) + 1e-9)]
        selection = [(d, d.removed) for d in kept]
        result, now = self._apply(model, selection)
        if self.base.base_gflops / now > target * WINDOW:
            result, now, selection = self._land(model, kept, predict, target)
        for d, count in selection:
            d.applied = count
        self.records += [d.record() for d in decisions]
        self.base.log(f"pagcp round {number}: kept {len(selection)} of {len(ranked)} pruned units "
                      f"(top {self.settings.topk:g} of {len(decisions)} by loss increase per GFLOP)")
        return result, now

    def _greedy(self, work: nn.Module, graph, plans: list[GroupPlan], order: list[int], probe: dict[int, float],
                predict: Prediction, number: int) -> list[UnitDecision]:
        """Visit the units in ``order`` on ``work``, pruning each by the largest ratio its bound allows."""
        lam, bounds = unit_bounds(self.settings, len(order))
        self.lambdas.append(lam)
        base = self.losses(work)
        current = dict(base)
        self.base.log(f"pagcp round {number}: {len(order)} units, d0 {self.settings.rate:g}, lambda {lam:.5f}, "
                      f"base losses " + ", ".join(f"{t} {v:.4g}" for t, v in base.items()))
        names = {id(m): n for n, m in work.named_modules()}
        counts = [0] * len(plans)
        decisions = []
        for visit, (index, bound) in enumerate(zip(order, bounds), start=1):
            plan = self._rank(graph, plans[index], names)
            options = self._options(graph, plan)
            removed, losses, breaking = self._search(graph, work, plan, options, base, bound)
            before = predict(counts)
            if removed:
                self._accept(graph, plan, removed)
                counts[index] = removed
            drop = before - predict(counts)
            score = None
            if removed:
                score = (sum(losses.values()) - sum(current.values())) / drop if drop > 0 else math.inf
                current = losses
            name = names[id(plan.root)]
            decisions.append(UnitDecision(number, visit, name, plan.size, removed, breaking, bound, dict(base),
                                          dict(current), probe[index], drop, score, options, plan, index))
            base = {task: max(base[task], current[task]) for task in base}
            self.base.log(f"pagcp round {number} unit {visit}/{len(order)} {name}: ratio "
                          f"{removed / plan.size:.2f} ({removed}/{plan.size} channels), breaking task "
                          f"{breaking or '-'}")
        return decisions

    def _rank(self, graph, plan: GroupPlan, names: dict[int, str]) -> GroupPlan:
        """The unit's channel ranking on the model as pruned so far (pruned neighbours change its norms)."""
        group = graph.get_pruning_group(plan.root, plan.handler, list(range(graph.get_out_channels(plan.root))))
        method = self.base.method
        return plan_group(graph, group, names, method.importance(), self.base.initial, self.base.max_layer_ratio,
                          self.base.round_to) or plan

    def _options(self, graph, plan: GroupPlan) -> list[int]:
        """The distinct channel counts the ratio grid gives (after the floor and round-to), ascending."""
        counts = sorted({counts_at_ratio([plan], ratio, self.base.round_to)[0] for ratio in RATIO_GRID} - {0})
        while counts and not graph.check_pruning_group(  # a count that empties a coupled layer: so do larger ones
                graph.get_pruning_group(plan.root, plan.handler, pruned_idxs(plan, counts[-1]))):
            counts.pop()
        return counts

    def _search(self, graph, work: nn.Module, plan: GroupPlan, options: list[int], base: dict[str, float],
                bound: float) -> tuple[int, dict[str, float] | None, str | None]:
        """The largest option whose every task loss stays within (1 + bound) × base, its losses, and the task
        that broke the bound at the next option. Galloping from the smallest option, then bisection."""
        measured: dict[int, dict[str, float]] = {}

        def fits(k: int) -> bool:
            measured[k] = self._measure(graph, work, plan, options[k])
            return worst_task(measured[k], base)[1] <= 1 + bound

        passing, failing, k = -1, len(options), 0
        while k < len(options):
            if not fits(k):
                failing = k
                break
            passing, k = k, 2 * k + 1
        while failing - passing > 1:
            middle = (passing + failing) // 2
            if fits(middle):
                passing = middle
            else:
                failing = middle
        breaking = worst_task(measured[failing], base)[0] if failing < len(options) else None
        if passing < 0:
            return 0, None, breaking
        return options[passing], measured[passing], breaking

    def _measure(self, graph, work: nn.Module, plan: GroupPlan, count: int) -> dict[str, float]:
        """Task losses of ``work`` with ``count`` more channels of the unit gone, on a copy."""
        clone = copy.deepcopy(work)
        prune_copy(graph.get_pruning_group(plan.root, plan.handler, pruned_idxs(plan, count)), work, clone)
        return self.losses(clone)

    @staticmethod
    def _accept(graph, plan: GroupPlan, count: int) -> None:
        """Prune the unit in the model the graph was traced on (the graph stays in step with it)."""
        graph.get_pruning_group(plan.root, plan.handler, pruned_idxs(plan, count)).prune()

    def _apply(self, model: nn.Module, selection: list[tuple[UnitDecision, int]]) -> tuple[nn.Module, float]:
        """A copy of ``model`` with each selected unit's least important ``count`` channels removed, and its
        GFLOPs. Unit indices stay valid: a round visits a unit once, and pruning one group never renumbers
        another group's root channels. Every count passed the group check on the greedy pass, where the
        other units were pruned at least as much."""
        result = copy.deepcopy(model)
        graph = self.base.graph_of(result)
        for decision, count in selection:
            root = result.get_submodule(decision.unit)
            graph.get_pruning_group(root, decision.plan.handler, pruned_idxs(decision.plan, count)).prune()
        return result, count_gflops(result, self.base.imgsz)

    def _land(self, model: nn.Module, kept: list[UnitDecision], predict: Prediction,
              target: float) -> tuple[nn.Module, float, list[tuple[UnitDecision, int]]]:
        """Fewer of the kept units, so the speed-up lands in the window; the aim is corrected by each miss.
        Without a landing, the closest overshoot is kept (an overshoot over a shortfall)."""
        aim, best, best_key = target * FIRST_AIM, None, None
        for _ in range(LANDING_ATTEMPTS):
            selection = _prefix(kept, predict, self.base.base_gflops / aim)
            result, now = self._apply(model, selection)
            reached = self.base.base_gflops / now
            key = (not target <= reached <= target * WINDOW, reached < target, abs(math.log(reached / target)))
            if best_key is None or key < best_key:
                best, best_key = (result, now, selection), key
            if not key[0]:
                break
            aim *= target * math.sqrt(WINDOW) / reached
        return best


def _only(index: int, count: int, size: int) -> list[int]:
    counts = [0] * size
    counts[index] = count
    return counts


def _prefix(ranked: list[UnitDecision], predict: Prediction, goal: float) -> list[tuple[UnitDecision, int]]:
    """The best-scored units, in order, until the predicted GFLOPs reach ``goal``; the last one cut back to
    its smallest option that still reaches it."""
    counts = [0] * len(predict.plans)
    selection = []
    for decision in ranked:
        counts[decision.index] = decision.removed
        if predict(counts) > goal:
            selection.append((decision, decision.removed))
            continue
        for count in (c for c in decision.options if c <= decision.removed):
            counts[decision.index] = count
            if predict(counts) <= goal:
                break
        selection.append((decision, counts[decision.index]))
        break
    return selection
