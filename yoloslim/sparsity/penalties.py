"""The sparsity regularizers: each adds ``sr * dR/dθ`` to the gradients of the weights it owns.

They run once per optimizer step on *unscaled* gradients (see :mod:`yoloslim.sparsity.callback`),
so ``sr`` means the same thing with or without AMP and gradient accumulation. A penalty is built
from a :class:`~yoloslim.sparsity.selection.BNSelection` (plain names and indices) and bound to
the live parameters in each process with :meth:`Penalty.bind`; the bound tensors are never pickled.

* ``slim``: L1 on BN γ (network slimming), ``R = Σ|γ|``.
* ``group_slim``: group lasso over the γ of BNs whose channels are pruned together,
  ``R = Σ_c ‖γ_c‖₂``; identical to ``slim`` for a group with one BN.
* ``group_sl``: group-norm regularization over every weight slice of a channel group (convs and
  BNs), ``grad += sr · s_c · w`` with ``s_c`` from 1 (most important channel) up to
  ``GROUP_SL_ALPHA`` (least important), by the group's L2 norm.
* ``group_reg``: growing regularization, ``grad += sr · m_c · w`` where ``m_c`` starts at 1 and
  grows every epoch by the channel's normalized unimportance (0…1).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from itertools import accumulate

import torch
from torch import nn
from ultralytics.utils.torch_utils import unwrap_model

from yoloslim.errors import UserError
from yoloslim.sparsity.selection import BNSelection, ChannelGroup, Member

GROUP_SL_ALPHA = 16.0
NORM_EPS = 1e-12


class Penalty:
    """Base: resolve parameter names once per process, then add the penalty gradient each step."""

    name = ""

    def __init__(self, selection: BNSelection) -> None:
        if not selection.penalized:
            raise UserError("no BN layer is eligible for the sparsity penalty — pass --penalize-coupled, "
                            "or use a model whose convolutions are followed by BatchNorm")
        self.selection = selection
        self._params: dict[str, nn.Parameter] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_params": {}}

    def bind(self, model: nn.Module) -> None:
        """Point the penalty at ``model``'s parameters (the training model, DDP-wrapped/compiled or not)."""
        params = dict(unwrap_model(model).named_parameters())
        missing = [n for n in self._needed() if n not in params]
        if missing:
            raise UserError(f"the model lacks {missing[0]} that sparse training selected — "
                            f"train the same model the selection was made for")
        self._params = {n: params[n] for n in self._needed()}

    def _needed(self) -> tuple[str, ...]:
        return self.selection.gamma_params

    @torch.no_grad()
    def apply(self, sr: float) -> None:
        if not self._params:
            raise RuntimeError("Penalty.apply() before bind(): bind the penalty to the training model first")
        if sr:
            self._add_gradient(sr)

    def on_epoch_end(self) -> None:
        """Hook for penalties with state that evolves per epoch."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the penalty where it stopped (tensors on the CPU)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of an interrupted run; call after :meth:`bind`."""

    def _add_gradient(self, sr: float) -> None:
        raise NotImplementedError


class SlimPenalty(Penalty):
    name = "slim"

    def _add_gradient(self, sr: float) -> None:
        for p in self._params.values():
            if p.grad is not None:
                p.grad.add_(torch.sign(p.detach()), alpha=sr)


class _BoundParam:
    """A parameter that group members slice, with the dims (0 = output, 1 = input channels) they slice.

    It is handled whole, whatever its members: one pass over the weight gives the channel norms
    along each dim and one ``addcmul_`` adds the gradient for all of them, so a step costs a fixed
    few ops per parameter instead of a norm, an index_add and an addcmul per member.
    """

    __slots__ = ("param", "dims", "sizes", "shapes")

    def __init__(self, param: nn.Parameter, dims: tuple[int, ...]) -> None:
        self.param = param
        self.dims = dims
        self.sizes = tuple(param.shape[d] for d in dims)
        self.shapes = tuple(tuple(-1 if i == d else 1 for i in range(param.dim())) for d in dims)

    def square_norms(self) -> list[torch.Tensor]:
        """Squared L2 norm (float32) of every slice along each of ``dims``.

        Both dims come from one tensor of squares, as contiguous row and column sums: faster than a
        norm over the kernel positions or a strided norm over the input channels.
        """
        sq = self.param.detach().float().square()
        if sq.dim() == 1:
            return [sq]
        sq = sq.flatten(1)
        return [sq.sum(1) if d == 0 else sq.sum(0).view(self.param.shape[1], -1).sum(1) for d in self.dims]

    def add_scaled(self, coeffs: Sequence[torch.Tensor]) -> None:
        """``grad += (Σ_k coeffs[k] along dims[k]) * w``: one pass over the gradient whatever the dims."""
        grad = self.param.grad
        if grad is not None:
            grad.addcmul_(self.param.detach(), reduce(torch.add, map(torch.Tensor.view, coeffs, self.shapes)))


class _Layout:
    """The members of all channel groups resolved to live parameters and flattened, once per process.

    The channels of all groups are numbered one after the other (group ``g``'s channel ``c`` is
    ``offset[g] + c``) and each bound (parameter, dim) owns a run of slots, one per index along
    that dim. ``slot[k]`` and ``channel[k]`` pair every member index with its group channel, so
    gathering norms into channels and spreading coefficients back to slices are one ``index_add_``
    each. An index that several members list counts once per member, as it did member by member.
    Never pickled: it holds the live parameters.
    """

    def __init__(self, groups: Sequence[Sequence[Member]], channels: Sequence[int],
                 params: dict[str, nn.Parameter]) -> None:
        dims: dict[str, set[int]] = {}
        for members in groups:
            for m in members:
                dims.setdefault(m.param, set()).add(m.dim)
        self.params = [_BoundParam(params[name], tuple(sorted(d))) for name, d in dims.items()]
        self.sizes = [size for b in self.params for size in b.sizes]
        keys = [(name, d) for name, b in zip(dims, self.params) for d in b.dims]
        slot, channel = _slot_channel_pairs(groups, channels, dict(zip(keys, accumulate(self.sizes, initial=0))))
        device = self.params[0].param.device
        self.slot = torch.tensor(slot, device=device)
        self.channel = torch.tensor(channel, device=device)
        self.channels = tuple(channels)
        self.group = torch.arange(len(channels), device=device).repeat_interleave(torch.tensor(channels, device=device))

    def channel_norms(self) -> torch.Tensor:
        """L2 norm of every group channel over all its members' slices (float32, flat over groups)."""
        per_slot = torch.cat([sq for b in self.params for sq in b.square_norms()])
        return per_slot.new_zeros(len(self.group)).index_add_(0, self.channel, per_slot[self.slot]).sqrt()

    def unimportance(self, norms: torch.Tensor) -> torch.Tensor:
        """0 for each group's strongest channel, 1 for its weakest (segment max/min over group ids)."""
        hi, lo = (norms.new_zeros(len(self.channels)).scatter_reduce_(0, self.group, norms, how, include_self=False)
                  for how in ("amax", "amin"))
        return (hi[self.group] - norms) / (hi - lo).clamp_min(NORM_EPS)[self.group]

    def add_scaled(self, coeff: torch.Tensor) -> None:
        """``grad[slice] += coeff[channel] * w[slice]`` for every member; slices in no member get 0."""
        chunks = iter(coeff.new_zeros(sum(self.sizes)).index_add_(0, self.slot, coeff[self.channel]).split(self.sizes))
        for b in self.params:
            b.add_scaled([next(chunks) for _ in b.dims])


def _slot_channel_pairs(groups: Sequence[Sequence[Member]], channels: Sequence[int],
                        first_slot: dict[tuple[str, int], int]) -> tuple[list[int], list[int]]:
    """(slot, flat group channel) of every index of every member, ``first_slot`` keyed by (parameter, dim)."""
    slot: list[int] = []
    channel: list[int] = []
    for members, offset in zip(groups, accumulate(channels, initial=0)):
        for m in members:
            slot.extend(first_slot[m.param, m.dim] + i for i in m.index)
            channel.extend(offset + r for r in m.root)
    return slot, channel


class _GroupPenalty(Penalty):
    """Shared machinery: per-channel L2 norms over the members of each channel group."""

    bn_only = False

    def _members(self, group: ChannelGroup) -> tuple[Member, ...]:
        return group.bn_members if self.bn_only else group.members

    def _needed(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.param for g in self.selection.groups for m in self._members(g)))

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        groups = self.selection.groups
        self._layout = _Layout([self._members(g) for g in groups], [g.channels for g in groups], self._params)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_layout": None}


class GroupSlimPenalty(_GroupPenalty):
    name = "group_slim"
    bn_only = True

    def _add_gradient(self, sr: float) -> None:
        self._layout.add_scaled(sr / self._layout.channel_norms().clamp_min(NORM_EPS))


class GroupNormPenalty(_GroupPenalty):
    name = "group_sl"

    def _add_gradient(self, sr: float) -> None:
        unimportance = self._layout.unimportance(self._layout.channel_norms())
        self._layout.add_scaled(sr * GROUP_SL_ALPHA ** unimportance)


class GrowingRegPenalty(_GroupPenalty):
    name = "group_reg"

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        self._growth = torch.ones(len(self._layout.group), device=self._layout.group.device)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_growth": None}

    def _add_gradient(self, sr: float) -> None:
        self._layout.add_scaled(sr * self._growth)

    @torch.no_grad()
    def on_epoch_end(self) -> None:
        self._growth.add_(self._layout.unimportance(self._layout.channel_norms()))

    def state_dict(self) -> dict:
        return {"growth": [g.clone() for g in self._growth.detach().cpu().split(self._layout.channels)]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        saved = list(state.get("growth") or [])
        if [tuple(g.shape) for g in saved] != [(n,) for n in self._layout.channels]:
            raise UserError("the saved group_reg growth state does not fit this model's channel groups — resume "
                            "the run with the model and --penalize-coupled setting it was started with")
        self._growth.copy_(torch.cat(saved))


METHODS: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (SlimPenalty, GroupSlimPenalty, GroupNormPenalty, GrowingRegPenalty)
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r} — choose one of {', '.join(METHODS)}")
    return method


def make_penalty(method: str, selection: BNSelection) -> Penalty:
    return METHODS[check_method(method)](selection)
