"""The vectorized group penalties add exactly the gradient of the per-member formulas.

The reference below follows the penalties module docstring one channel slice at a time, in
float64: a channel's norm sums the squares of every member slice holding it; ``group_slim``
adds ``sr · γ / ‖γ_c‖`` over BN members only, ``group_sl`` adds ``sr · α^u_c · w`` and
``group_reg`` adds ``sr · m_c · w`` with ``m_c = 1 + Σ_epochs u_c``, where ``u_c`` is the
channel's unimportance in its group (0 strongest, 1 weakest). yolov8n has concats (C2f, neck)
and residual adds (penalized only with ``penalize_coupled``) and a member with non-contiguous
indices; a hand-made selection covers indices listed by several members.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.errors import UserError
from yoloslim.models.load import load_module
from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
from yoloslim.sparsity.penalties import GROUP_SL_ALPHA, NORM_EPS, make_penalty
from yoloslim.sparsity.selection import BNSelection, ChannelGroup, Member, select_bns

GROUP_METHODS = ("group_slim", "group_sl", "group_reg")
SR = 0.5
RTOL = 1e-6


def randomize(model: nn.Module, seed: int) -> None:
    """Random weights whose channels differ in scale, as in a trained network.

    With i.i.d. weights every channel of a wide group has nearly the same norm, and ``α^u`` then
    amplifies float32 rounding of the norms past 1e-6 in any implementation, old or new.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = torch.rand(p.shape[0], *[1] * (p.dim() - 1), generator=g) + 0.1
            if p.dim() > 1:
                scale = scale * (torch.rand(1, p.shape[1], *[1] * (p.dim() - 2), generator=g) + 0.1)
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def members(group: ChannelGroup, method: str) -> tuple[Member, ...]:
    return group.bn_members if method == "group_slim" else group.members


def reference_norms(selection: BNSelection, weights: dict[str, torch.Tensor], method: str) -> list[torch.Tensor]:
    norms = []
    for group in selection.groups:
        sq = torch.zeros(group.channels, dtype=torch.float64)
        for m in members(group, method):
            for i, c in zip(m.index, m.root):
                sq[c] += weights[m.param].select(m.dim, i).square().sum()
        norms.append(sq.sqrt())
    return norms


def unimportance(norms: torch.Tensor) -> torch.Tensor:
    return (norms.max() - norms) / (norms.max() - norms.min()).clamp_min(NORM_EPS)


def reference_delta(selection: BNSelection, weights: dict[str, torch.Tensor], method: str,
                    growth: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The gradient the penalty should add to each parameter, member slice by member slice."""
    norms = reference_norms(selection, weights, method)
    if method == "group_slim":
        coeffs = [SR / n.clamp_min(NORM_EPS) for n in norms]
    elif method == "group_sl":
        coeffs = [SR * GROUP_SL_ALPHA ** unimportance(n) for n in norms]
    else:
        coeffs = [SR * m for m in growth]
    delta = {name: torch.zeros_like(w) for name, w in weights.items()}
    for group, coeff in zip(selection.groups, coeffs):
        for m in members(group, method):
            for i, c in zip(m.index, m.root):
                delta[m.param].select(m.dim, i).add_(coeff[c] * weights[m.param].select(m.dim, i))
    return delta


def float64_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().double() for n, p in model.named_parameters()}


def check_penalty(model: nn.Module, selection: BNSelection, method: str, seed: int) -> None:
    """One penalty step on zero grads, random grads, and a parameter without grad, against the reference."""
    randomize(model, seed)
    penalty = make_penalty(method, selection)
    penalty.bind(model)
    growth = None
    if method == "group_reg":  # grow from these weights, then step with others: growth is state, not recomputed
        growth = [1 + unimportance(n) for n in reference_norms(selection, float64_weights(model), method)]
        penalty.on_epoch_end()
        randomize(model, seed + 1)
    expected = reference_delta(selection, float64_weights(model), method, growth)
    params = dict(model.named_parameters())
    no_grad = next(m.param for m in members(selection.groups[0], method))
    g = torch.Generator().manual_seed(seed)
    for random_grads in (False, True):
        for p in params.values():
            p.grad = torch.randn(p.shape, generator=g) * 1e-2 if random_grads else torch.zeros_like(p)
        if random_grads:
            params[no_grad].grad = None
        before = {n: p.grad.double() for n, p in params.items() if p.grad is not None}
        penalty.apply(SR)
        assert params[no_grad].grad is None or not random_grads
        for name, start in before.items():
            after = params[name].grad.double()
            # the penalty's own error, plus float32 rounding of the sum when the grads were not zero
            allowed = RTOL * expected[name].abs() + 2.0**-24 * after.abs()
            excess = ((after - start - expected[name]).abs() - allowed).max()
            assert excess <= 0, f"{method}, {name}, random grads {random_grads}: off by {excess:.3g} beyond tolerance"


@pytest.fixture(scope="module")
def yolov8n() -> tuple[nn.Module, dict[bool, BNSelection]]:
    model = load_module("yolov8n.yaml")
    prunable = prepare_for_pruning(model, imgsz=64)
    graph = build_dependency_graph(prunable)
    return model, {coupled: select_bns(model, graph, prunable.ignored_layers, penalize_coupled=coupled)
                   for coupled in (False, True)}


@pytest.mark.parametrize("coupled", [False, True], ids=["free", "residual-coupled"])
@pytest.mark.parametrize("method", GROUP_METHODS)
def test_yolov8n_penalty_gradient_matches_the_per_member_reference(yolov8n, method: str, coupled: bool) -> None:
    model, selections = yolov8n
    selection = selections[coupled]
    groups_slicing = {}
    for i, group in enumerate(selection.groups):
        for m in group.members:
            groups_slicing.setdefault((m.param, m.dim), set()).add(i)
    assert any(dim == 1 and len(groups) > 1 for (_, dim), groups in groups_slicing.items()), "no concat"
    assert any(len(g.bn_members) > 1 for g in selection.groups) == coupled, "residual-tied BNs not as expected"
    assert any(m.index != tuple(range(m.index[0], m.index[0] + len(m.index))) for g in selection.groups
               for m in g.members), "no member with non-contiguous indices"
    check_penalty(model, selection, method, seed=7 + coupled)


def overlapping_selection() -> tuple[nn.Module, BNSelection]:
    """Two groups slicing the same parameters, with shared indices, a member listed twice, unordered roots."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    bn = Member("1.weight", 0, (0, 2, 4, 6), (0, 1, 2, 3), True)
    first = ChannelGroup(4, (Member("0.weight", 0, (0, 2, 4, 6), (0, 1, 2, 3), False), bn, bn,
                             Member("2.weight", 1, (0, 2, 4, 6), (0, 1, 2, 3), False)))
    second = ChannelGroup(3, (Member("0.weight", 0, (6, 1, 3), (2, 0, 1), False),
                              Member("1.weight", 0, (7, 5), (0, 2), True),
                              Member("2.weight", 1, (1, 3, 6), (0, 1, 2), False),
                              Member("2.weight", 0, (0, 1, 2), (0, 1, 2), False)))
    return model, BNSelection(penalized=("1",), groups=(first, second))


@pytest.mark.parametrize("method", GROUP_METHODS)
def test_indices_listed_by_several_members_count_once_per_member(method: str) -> None:
    model, selection = overlapping_selection()
    check_penalty(model, selection, method, seed=3)


def test_group_reg_growth_survives_state_dict_and_pickling_drops_the_bound_tensors() -> None:
    model, selection = overlapping_selection()
    randomize(model, 5)
    penalty = make_penalty("group_reg", selection)
    penalty.bind(model)
    penalty.on_epoch_end()
    state = penalty.state_dict()
    assert [tuple(g.shape) for g in state["growth"]] == [(4,), (3,)]
    assert all(g.device.type == "cpu" and (g >= 1).all() and (g > 1).any() for g in state["growth"])
    copy = pickle.loads(pickle.dumps(penalty))
    assert copy._layout is None and copy._growth is None and copy._params == {}
    copy.bind(model)
    copy.load_state_dict(state)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    penalty.apply(SR)
    first = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad.zero_()
    copy.apply(SR)
    assert all(torch.equal(a, p.grad) for a, p in zip(first, model.parameters()))
    with pytest.raises(UserError, match="does not fit"):
        copy.load_state_dict({"growth": state["growth"][:1]})
