"""Reach a target speed-up in one or two prunes instead of hundreds of small steps.

Stepping a pruner and re-counting MACs after every step costs minutes, because every step
re-traces the model. The planner traces once per *round* instead: it scores every channel group
once, then predicts the MACs of any candidate pruning arithmetically — each conv/linear/BN layer's
cost is a product of its input and output channel counts, measured once at the tracing size and
scaled by pixel count to ``imgsz`` — and searches the global importance threshold (or, for local
pruning, the per-layer ratio) whose prediction lands in the target window. It then prunes once and
counts the real GFLOPs at ``imgsz``. The prediction ignores layers it does not model, so a round
can land a little short; the next round continues from the pruned model, aiming at the middle of
the window. If a round overshoots the window, the planner restarts from an untouched copy with an
aim corrected by the size of the miss.

The same rounds can aim at another cost: :class:`Cost` is what a speed-up is measured in (GFLOPs here,
measured milliseconds in :mod:`yoloslim.latency.cost`).

Per-layer limits: no group keeps fewer than ``channel_floor`` of its *original* channels, and
torch-pruning's ``round_to`` (remaining channels rounded down to a multiple) never goes below it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch
from torch import nn

from yoloslim.prune.methods import Method

if TYPE_CHECKING:
    from yoloslim.prune.graph import Prunable

WINDOW = 1.05  # reached speed-up must be in [target, target * WINDOW]
FIRST_AIM = 1.01  # aim just above the target: the prediction errs towards too little pruning


def channel_floor(initial: int, max_layer_ratio: float, round_to: int | None) -> int:
    """The fewest channels a layer that started with ``initial`` may keep."""
    keep = max(1, math.ceil(initial * (1.0 - max_layer_ratio) - 1e-9))
    if round_to:
        keep = math.ceil(keep / round_to) * round_to
    return min(initial, keep)


@dataclass
class GroupPlan:
    """One torch-pruning group: its channels in pruning order and the layers its pruning touches."""

    root: nn.Module
    handler: Callable
    order: list[int]  # prunable channel indices, least important first (floor channels excluded)
    scores: torch.Tensor  # importance of ``order``'s channels, ascending
    size: int  # channels per channel group
    ch_groups: int
    floor: int  # channels per channel group that must remain
    members: list[tuple[str, str, float]]  # (layer name, "in"/"out", channels removed per root channel)


@dataclass
class LayerCost:
    """MACs of one layer as ``unit * f(in) * g(out)`` at the tracing resolution."""

    unit: float
    in_channels: int
    out_channels: int
    uses_in: bool

    def macs(self, removed_in: float = 0.0, removed_out: float = 0.0) -> float:
        out = self.out_channels - removed_out
        return self.unit * out * ((self.in_channels - removed_in) if self.uses_in else 1.0)


def layer_costs(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, LayerCost]:
    """Cost coefficients of every conv, linear and batch-norm layer, from one forward pass."""
    costs: dict[str, LayerCost] = {}
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor) or output.ndim < 2:
                return
            if isinstance(module, nn.modules.conv._ConvNd):
                positions = output[0, 0].numel()
                depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
                kernel = math.prod(module.kernel_size)
                unit = positions * kernel * (1.0 if depthwise else 1.0 / module.groups)
                costs[name] = LayerCost(unit, module.in_channels, module.out_channels, not depthwise)
            elif isinstance(module, nn.Linear):
                costs[name] = LayerCost(output.numel() / module.out_features, module.in_features,
                                        module.out_features, True)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                costs[name] = LayerCost(2.0 * output[0, 0].numel(), module.num_features, module.num_features, False)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            hooks.append(module.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            model.eval()(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return costs


def _channel_groups(graph, group) -> int:
    """Channels tied in blocks (grouped convs, GroupNorm) are pruned at the same index in every block."""
    blocks = 1
    for dep, _ in group:
        module = dep.target.module
        pruner = graph.get_pruner_of_module(module)
        if pruner is None:
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
            continue  # depthwise: torch-pruning prunes its in and out channels together
        out = graph.is_out_channel_pruning_fn(dep.handler)
        blocks = max(blocks, pruner.get_out_channel_groups(module) if out else pruner.get_in_channel_groups(module))
    return blocks


def plan_groups(graph, model: nn.Module, importance, initial: dict[str, int], max_layer_ratio: float,
                round_to: int | None) -> list[GroupPlan]:
    """Score every prunable group once and list what pruning it would touch.

    ``initial`` maps a group's root layer to its channel count before the first round (filled here
    on first sight), so the per-layer limit holds across rounds.
    """
    names = {id(m): n for n, m in model.named_modules()}
    plans = (plan_group(graph, group, names, importance, initial, max_layer_ratio, round_to)
             for group in graph.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)))
    return [plan for plan in plans if plan is not None]


def plan_group(graph, group, names: dict[int, str], importance, initial: dict[str, int], max_layer_ratio: float,
               round_to: int | None) -> GroupPlan | None:
    """One group's plan (see :func:`plan_groups`); None for a group of one channel or without scores.
    ``names`` maps ``id(module)`` to its name in the model."""
    root_dep, root_idxs = group[0]
    ch_groups = _channel_groups(graph, group)
    scores = importance(group)
    if scores is None or len(root_idxs) < 2 or len(scores) % ch_groups:
        return None
    scores = torch.nan_to_num(scores.detach().float().cpu(), nan=0.0).view(ch_groups, -1).mean(0)
    size = len(scores)
    start = initial.setdefault(names[id(root_dep.target.module)], size)
    floor = channel_floor(start, max_layer_ratio, round_to if ch_groups == 1 else None)
    prunable = torch.argsort(scores, stable=True)[: max(0, size - floor)]
    members = []
    for dep, idxs in group:
        name = names.get(id(dep.target.module))
        if name is None:
            continue
        if graph.is_out_channel_pruning_fn(dep.handler):
            members.append((name, "out", len(idxs) / len(root_idxs)))
        elif graph.is_in_channel_pruning_fn(dep.handler):
            members.append((name, "in", len(idxs) / len(root_idxs)))
    return GroupPlan(root_dep.target.module, root_dep.handler, prunable.tolist(), scores[prunable], size,
                     ch_groups, floor, members)


def rounded_count(plan: GroupPlan, count: int, round_to: int | None) -> int:
    """torch-pruning's ``round_to``: remaining channels rounded down to a multiple, but never below the floor."""
    if count <= 0:
        return 0
    if round_to and plan.ch_groups == 1:
        remaining = plan.size - count
        remaining = max(plan.floor, remaining - remaining % round_to)
        count = plan.size - remaining
    return min(count, len(plan.order))


class GlobalRanking:
    """All prunable channels of all groups in one order, least important first.

    Ties (e.g. every BN scale still 1.0 in a model that was never sparse-trained) are broken by a
    channel's relative rank inside its group, so equal scores are pruned evenly across groups.
    """

    def __init__(self, plans: list[GroupPlan]):
        scores = [float(s) for p in plans for s in p.scores.tolist()]
        owners = [g for g, p in enumerate(plans) for _ in p.order]
        spread = [i / len(p.order) for p in plans for i in range(len(p.order))]
        ranked = sorted(range(len(scores)), key=lambda i: (scores[i], spread[i], owners[i]))
        self.owners = [owners[i] for i in ranked]
        self.groups = len(plans)

    def __len__(self) -> int:
        return len(self.owners)

    def counts(self, n: int) -> list[int]:
        """Channels each group loses when the ``n`` lowest-ranked channels go."""
        counts = [0] * self.groups
        for owner in self.owners[:n]:
            counts[owner] += 1
        return counts


def counts_below(plans: list[GroupPlan], ranking: GlobalRanking, n: int, round_to: int | None) -> list[int]:
    """Global pruning: the ``n`` lowest-ranked channels go, then each group is rounded."""
    return [rounded_count(p, c, round_to) for p, c in zip(plans, ranking.counts(n))]


def counts_at_ratio(plans: list[GroupPlan], ratio: float, round_to: int | None) -> list[int]:
    """Local pruning: every group drops the same share of its channels."""
    return [rounded_count(p, p.size - max(p.floor, int(p.size * (1.0 - ratio))), round_to) for p in plans]


def removed_channels(plans: list[GroupPlan], counts: list[int]) -> dict[tuple[str, str], float]:
    """Channels each layer loses on its ("in" or "out") side when each group loses its count."""
    removed: dict[tuple[str, str], float] = {}
    for plan, count in zip(plans, counts):
        if count:
            for name, side, share in plan.members:
                removed[name, side] = removed.get((name, side), 0.0) + share * count * plan.ch_groups
    return removed


class Prediction:
    """GFLOPs at ``imgsz`` after a candidate pruning, predicted from per-layer costs."""

    def __init__(self, plans: list[GroupPlan], costs: dict[str, LayerCost], gflops_now: float, pixel_scale: float):
        self.plans, self.costs, self.gflops_now = plans, costs, gflops_now
        self.to_gflops = 2.0 * pixel_scale / 1e9

    def __call__(self, counts: list[int]) -> float:
        removed = removed_channels(self.plans, counts)
        saved = 0.0
        for name in {name for name, _ in removed}:
            cost = self.costs.get(name)
            if cost is not None:
                saved += cost.macs() - cost.macs(removed.get((name, "in"), 0.0), removed.get((name, "out"), 0.0))
        return self.gflops_now - saved * self.to_gflops


def search_counts(plans: list[GroupPlan], predict: Callable[[list[int]], float], goal: float, global_pruning: bool,
                  round_to: int | None) -> list[int]:
    """The least pruning predicted to bring the cost (GFLOPs or milliseconds) down to ``goal`` (or the most there
    is)."""
    if global_pruning:
        ranking = GlobalRanking(plans)
        lo, hi = 0, len(ranking)
        while lo < hi:
            mid = (lo + hi) // 2
            if predict(counts_below(plans, ranking, mid, round_to)) <= goal:
                hi = mid
            else:
                lo = mid + 1
        return counts_below(plans, ranking, lo, round_to)
    lo, hi = 0.0, 1.0
    if predict(counts_at_ratio(plans, hi, round_to)) > goal:
        return counts_at_ratio(plans, hi, round_to)
    for _ in range(40):
        mid = (lo + hi) / 2
        if predict(counts_at_ratio(plans, mid, round_to)) <= goal:
            hi = mid
        else:
            lo = mid
    return counts_at_ratio(plans, hi, round_to)


def counts_for_ratio(plans: list[GroupPlan], ratio: float, global_pruning: bool, round_to: int | None) -> list[int]:
    """A fixed channel ratio: globally, the ``ratio`` share of all channels with the lowest scores."""
    if not global_pruning:
        return counts_at_ratio(plans, ratio, round_to)
    ranking = GlobalRanking(plans)
    wanted = round(sum(p.size for p in plans) * ratio)
    return counts_below(plans, ranking, min(len(ranking), wanted), round_to)


def pruned_idxs(plan: GroupPlan, count: int) -> list[int]:
    """The root channel indices that go when ``plan`` loses ``count`` channels (in every channel block)."""
    return [i + block * plan.size for block in range(plan.ch_groups) for i in plan.order[:count]]


def apply_counts(graph, plans: list[GroupPlan], counts: list[int]) -> None:
    """Prune each group's ``count`` least important channels (in every channel block)."""
    for plan, count in zip(plans, counts):
        if not count:
            continue
        group = graph.get_pruning_group(plan.root, plan.handler, pruned_idxs(plan, count))
        if graph.check_pruning_group(group):
            group.prune()


def count_gflops(model: nn.Module, imgsz: int) -> float:
    """ultralytics' GFLOPs at ``imgsz`` (thop, extrapolated from stride-sized proxies: exact for convs)."""
    from yoloslim.report.metrics import gflops

    value = gflops(model, imgsz)
    if value <= 0:
        raise RuntimeError(f"could not count the GFLOPs of {type(model).__name__} (thop failed on it)")
    return value


@dataclass
class PlanOutcome:
    model: nn.Module
    base_gflops: float
    gflops: float
    steps: int
    reached: bool
    note: str = ""  # why the target window was missed, when it was
    details: dict[str, Any] = field(default_factory=dict)  # a method's own record for the report (PAGCP: units)

    @property
    def speed_up(self) -> float:
        return self.base_gflops / self.gflops


@dataclass
class Planner:
    """Prunes copies of a prepared model (a ``yoloslim.prune.Prunable``) with one method.

    ``gradients`` are calibration statistics by parameter name, put on each copy as ``.grad``
    for the importances that read them.
    """

    prunable: Prunable
    method: Method
    imgsz: int
    global_pruning: bool = True
    round_to: int | None = 8
    max_layer_ratio: float = 0.8
    gradients: dict[str, torch.Tensor] | None = None
    seed: int = 0
    log: Callable[[str], None] = print
    initial: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {id(m): n for n, m in self.prunable.model.named_modules()}
        self.ignored_names = [names[id(m)] for m in self.prunable.ignored_layers if id(m) in names]
        self.base_gflops = count_gflops(self.prunable.model, self.imgsz)
        height, width = self.prunable.example_inputs.shape[-2:]
        self.pixel_scale = self.imgsz * self.imgsz / (height * width)

    def fresh_copy(self) -> nn.Module:
        from yoloslim.prune.calibration import attach_gradients

        model = copy.deepcopy(self.prunable.model)
        if self.gradients is not None:
            attach_gradients(model, self.gradients)
        return model

    def graph_of(self, model: nn.Module):
        """A dependency graph of ``model`` (a copy of the prepared model) with the same layers protected."""
        from dataclasses import replace

        from yoloslim.prune.graph import build_dependency_graph

        ignored = [model.get_submodule(n) for n in self.ignored_names]
        return build_dependency_graph(replace(self.prunable, model=model, ignored_layers=ignored))

    def analyse(self, model: nn.Module, step: int):
        """Trace ``model``, score its groups and set up the GFLOPs prediction (one trace per round)."""
        graph = self.graph_of(model)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed + step)
            plans = plan_groups(graph, model, self.method.importance(), self.initial, self.max_layer_ratio,
                                self.round_to)
        costs = layer_costs(model, self.prunable.example_inputs)
        predict = Prediction(plans, costs, count_gflops(model, self.imgsz), self.pixel_scale)
        return graph, plans, predict

    def to_ratio(self, ratio: float) -> PlanOutcome:
        model = self.fresh_copy()
        graph, plans, _ = self.analyse(model, 1)
        apply_counts(graph, plans, counts_for_ratio(plans, ratio, self.global_pruning, self.round_to))
        return self.finish(model, steps=1, reached=True)

    def to_speed_up(self, target: float, max_steps: int, cost: Cost | None = None) -> PlanOutcome:
        """Prune until base/pruned cost is in [target, target × WINDOW], in at most ``max_steps`` rounds.

        ``cost`` is what the speed-up is measured in: GFLOPs at ``imgsz`` unless another cost model is given
        (``yoloslim.latency.cost.LatencyCost``: measured milliseconds on a runtime)."""
        cost = cost or FlopsCost(self)
        aim, model, previous, note, step = target * FIRST_AIM, self.fresh_copy(), cost.base, "", 0
        overshot: nn.Module | None = None  # the last model that went past the window, kept as a fallback
        fresh, fresh_miss = True, 1.0  # predicted / reached of the last round that pruned the unpruned model
        for step in range(1, max_steps + 1):
            started = time.perf_counter()
            graph, plans, flops = self.analyse(model, step)
            predict = cost.predictor(model, plans, flops)
            counts = cost.choose(plans, predict, cost.base / aim, self.global_pruning, self.round_to)
            if not any(counts):
                note = f"no channel is left to prune within --max-layer-ratio {self.max_layer_ratio}"
                break
            predicted = cost.base / predict(counts)
            apply_counts(graph, plans, counts)
            now = cost.measure(model)
            reached = cost.base / now
            self.log(f"prune step {step}: -{sum(counts)} channels in {sum(1 for c in counts if c)} groups, "
                     f"{cost.describe(now)}, speed-up {reached:.3f}x (predicted {predicted:.3f}x, "
                     f"{time.perf_counter() - started:.1f} s)")
            if target <= reached <= target * WINDOW:
                return self.finish(model, step, reached=True, details=cost.details())
            if now >= previous and cost.exact:  # a measured cost may not fall for one round by noise alone
                note = "the last step removed nothing more (per-layer limits or round-to)"
                break
            if fresh:
                fresh_miss = predicted / reached
            fresh = False
            if reached < target:
                aim = target * math.sqrt(WINDOW)  # continue from here, towards the middle of the window
            elif step < max_steps:
                # restart, corrected by how far a round from the unpruned model missed (a round that continued
                # from a pruned model may have predicted well, and correcting by it would repeat the first miss)
                aim = target * math.sqrt(WINDOW) * fresh_miss
                overshot, model, now, fresh = model, self.fresh_copy(), cost.base, True
            previous = now
        else:
            note = f"--max-steps {max_steps} was used up"
        if overshot is not None and cost.base / cost.measure(model) < target:
            model = overshot
            cost.measure(model)
        return self.finish(model, step, reached=False, note=note, details=cost.details())

    def finish(self, model: nn.Module, steps: int, reached: bool, note: str = "",
               details: dict[str, Any] | None = None) -> PlanOutcome:
        """The outcome for ``model``: gradients dropped, eval mode, one forward pass, GFLOPs counted."""
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            model(self.prunable.example_inputs)
        return PlanOutcome(model, self.base_gflops, count_gflops(model, self.imgsz), steps, reached, note,
                           dict(details or {}))


class Cost(Protocol):
    """What a speed-up is measured in, for :meth:`Planner.to_speed_up`."""

    base: float  # the unpruned model's cost
    exact: bool  # counted (the same model always costs the same) rather than timed

    def predictor(self, model: nn.Module, plans: list[GroupPlan], flops: Prediction) -> Callable[[list[int]], float]:
        """Predicted cost of ``model`` after a candidate pruning (per-group counts)."""

    def choose(self, plans: list[GroupPlan], predict: Callable[[list[int]], float], goal: float,
               global_pruning: bool, round_to: int | None) -> list[int]:
        """The per-group counts predicted to bring the cost down to ``goal``."""

    def measure(self, model: nn.Module) -> float:
        """The real cost of ``model``, in the units of ``base``."""

    def describe(self, value: float) -> str:
        """A measured cost for the log line."""

    def details(self) -> dict[str, Any]:
        """The cost model's record for the report."""


@dataclass
class FlopsCost:
    """GFLOPs at the planner's ``imgsz``: predicted from per-layer MACs, counted by thop."""

    planner: Planner
    exact: bool = True

    @property
    def base(self) -> float:
        return self.planner.base_gflops

    def predictor(self, model: nn.Module, plans: list[GroupPlan], flops: Prediction) -> Prediction:
        return flops

    def choose(self, plans: list[GroupPlan], predict: Callable[[list[int]], float], goal: float,
               global_pruning: bool, round_to: int | None) -> list[int]:
        return search_counts(plans, predict, goal, global_pruning, round_to)

    def measure(self, model: nn.Module) -> float:
        return count_gflops(model, self.planner.imgsz)

    def describe(self, value: float) -> str:
        return f"{value:.2f} GFLOPs"

    def details(self) -> dict[str, Any]:
        return {}
