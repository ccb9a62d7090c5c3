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


class _BoundMember:
    """A group member resolved to its live parameter (per process, never pickled).

    Most members cover a contiguous channel range (a whole conv output, one side of a concat):
    those are read and updated through a view instead of gather/scatter copies.
    """

    __slots__ = ("param", "dim", "index", "root", "start")

    def __init__(self, member: Member, param: nn.Parameter) -> None:
        self.param = param
        self.dim = member.dim
        self.index = torch.tensor(member.index, device=param.device)
        self.root = torch.tensor(member.root, device=param.device)
        first = member.index[0]
        contiguous = member.index == tuple(range(first, first + len(member.index)))
        self.start = first if contiguous else None

    def weights(self) -> torch.Tensor:
        w = self.param.detach()
        if self.start is None:
            return w.index_select(self.dim, self.index)
        return w.narrow(self.dim, self.start, len(self.index))

    def channel_norms(self, w: torch.Tensor) -> torch.Tensor:
        """L2 norm of each channel's slice of ``w`` (the output of :meth:`weights`)."""
        if w.dim() == 1:
            return w.float().abs()
        rows = w.movedim(self.dim, 0).reshape(len(self.index), -1)  # a copy for dim 1, yet faster than a strided norm
        return torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32)

    def add_scaled_to_grad(self, w: torch.Tensor, coeff: torch.Tensor) -> None:
        """``grad[slice] += coeff[channel] * w``, ``coeff`` indexed by the group's channels."""
        grad = self.param.grad
        shape = [1] * w.dim()
        shape[self.dim] = len(self.index)
        per_slice = coeff[self.root].view(shape).to(grad.dtype)
        if self.start is None:
            grad.index_add_(self.dim, self.index, w * per_slice)
        else:
            grad.narrow(self.dim, self.start, len(self.index)).addcmul_(w, per_slice)


class _GroupPenalty(Penalty):
    """Shared machinery: per-channel L2 norms over the members of each channel group."""

    bn_only = False

    def _members(self, group: ChannelGroup) -> tuple[Member, ...]:
        return group.bn_members if self.bn_only else group.members

    def _needed(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.param for g in self.selection.groups for m in self._members(g)))

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        self._bound = [[_BoundMember(m, self._params[m.param]) for m in self._members(g)]
                       for g in self.selection.groups]

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_bound": []}

    def _groups(self):
        """(group, bound members, their current weight slices) for every group."""
        for group, members in zip(self.selection.groups, self._bound):
            yield group, members, [m.weights() for m in members]

    @staticmethod
    def _channel_norms(group: ChannelGroup, members: list[_BoundMember], weights: list[torch.Tensor]) -> torch.Tensor:
        sq = torch.zeros(group.channels, device=weights[0].device)
        for m, w in zip(members, weights):
            sq.index_add_(0, m.root, m.channel_norms(w).square())
        return sq.sqrt()

    @staticmethod
    def _add_scaled(members: list[_BoundMember], weights: list[torch.Tensor], coeff: torch.Tensor) -> None:
        """``grad[slice] += coeff[channel] * w[slice]`` for every member of a group."""
        for m, w in zip(members, weights):
            if m.param.grad is not None:
                m.add_scaled_to_grad(w, coeff)


class GroupSlimPenalty(_GroupPenalty):
    name = "group_slim"
    bn_only = True

    def _add_gradient(self, sr: float) -> None:
        for group, members, weights in self._groups():
            norms = self._channel_norms(group, members, weights)
            self._add_scaled(members, weights, sr / norms.clamp_min(NORM_EPS))


def _unimportance(norms: torch.Tensor) -> torch.Tensor:
    """0 for the group's strongest channel, 1 for its weakest."""
    return (norms.max() - norms) / (norms.max() - norms.min()).clamp_min(NORM_EPS)


class GroupNormPenalty(_GroupPenalty):
    name = "group_sl"

    def _add_gradient(self, sr: float) -> None:
        for group, members, weights in self._groups():
            scale = GROUP_SL_ALPHA ** _unimportance(self._channel_norms(group, members, weights))
            self._add_scaled(members, weights, sr * scale)


class GrowingRegPenalty(_GroupPenalty):
    name = "group_reg"

    def bind(self, model: nn.Module) -> None:
        super().bind(model)
        device = next(iter(self._params.values())).device
        self._growth = [torch.ones(g.channels, device=device) for g in self.selection.groups]

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_growth": []}

    def _add_gradient(self, sr: float) -> None:
        for (_, members, weights), growth in zip(self._groups(), self._growth):
            self._add_scaled(members, weights, sr * growth)

    @torch.no_grad()
    def on_epoch_end(self) -> None:
        for (group, members, weights), growth in zip(self._groups(), self._growth):
            growth.add_(_unimportance(self._channel_norms(group, members, weights)))

    def state_dict(self) -> dict:
        return {"growth": [g.detach().cpu().clone() for g in self._growth]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        saved = list(state.get("growth") or [])
        if [tuple(g.shape) for g in saved] != [tuple(g.shape) for g in self._growth]:
            raise UserError("the saved group_reg growth state does not fit this model's channel groups — resume "
                            "the run with the model and --penalize-coupled setting it was started with")
        for growth, value in zip(self._growth, saved):
            growth.copy_(value)


METHODS: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (SlimPenalty, GroupSlimPenalty, GroupNormPenalty, GrowingRegPenalty)
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r} — choose one of {', '.join(METHODS)}")
    return method


def make_penalty(method: str, selection: BNSelection) -> Penalty:
    return METHODS[check_method(method)](selection)
