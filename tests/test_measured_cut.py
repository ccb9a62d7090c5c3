"""The measured safe ratio: the largest classic cut whose task losses stay within the bound.

Channels whose BN γ and β are both zero output exactly zero after SiLU, so cutting them changes nothing. A
model where a known share of every penalized BN is dead shows both halves: that such a cut leaves the outputs
as they were, and that the search stops exactly where live channels start to go (with a loss that counts
them, so the edge is known)."""

from __future__ import annotations

import torch

from yoloslim.prune.classic import slim_prune_model
from yoloslim.sparsity.measured_cut import LOSS_BOUND, measure_safe_ratio
from yoloslim.sparsity.verdict import LAYER_KEEP

DEAD_SHARE = 0.4
IMGSZ = 64


def _with_dead_channels(weights: str, dead: bool = True) -> torch.nn.Module:
    from yoloslim.models.load import load_module
    from yoloslim.sparsity.compare import module_selection

    model = load_module(weights).float().eval()
    penalized = module_selection(model).penalized  # makes the model prunable in place: names change
    modules = dict(model.named_modules())
    g = torch.Generator().manual_seed(0)
    for name in penalized:
        bn = modules[name]
        chosen = torch.randperm(bn.num_features, generator=g)[:round(DEAD_SHARE * bn.num_features)]
        bn.weight.data[chosen] = 0.0 if dead else 1e-3  # alive: the smallest γ, but still carrying a signal
        if dead:
            bn.bias.data[chosen] = 0.0
    return model


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.linspace(0, 1, 3 * IMGSZ * IMGSZ).view(1, 3, IMGSZ, IMGSZ))[0]


def test_cutting_only_dead_channels_leaves_the_outputs_unchanged(trained_yolov8n):
    ratio = DEAD_SHARE - 0.02
    for dead, changed in ((True, False), (False, True)):
        model = _with_dead_channels(trained_yolov8n, dead)
        cut = slim_prune_model(model, ratio, layer_keep=LAYER_KEEP, imgsz=IMGSZ).model
        difference = float((_outputs(cut) - _outputs(model)).abs().max())
        assert (difference > 1e-3) == changed, difference


class LiveChannelLoss:
    """A stand-in for the task losses that rises with the share of live (non-zero γ) channels a cut removed."""

    def __init__(self, model: torch.nn.Module):
        self.live = self.count(model)

    @staticmethod
    def count(model: torch.nn.Module) -> int:
        return sum(int((m.weight.detach() != 0).sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        return {"box": 1.0 + 10.0 * (1.0 - self.count(model) / self.live), "cls": 1.0}


def test_search_stops_where_live_channels_start_to_go(trained_yolov8n):
    model = _with_dead_channels(trained_yolov8n)
    losses = LiveChannelLoss(model)

    def rise(ratio: float) -> float:
        cut = slim_prune_model(model, ratio, layer_keep=LAYER_KEEP, round_up=8, imgsz=IMGSZ).model
        return losses(cut)["box"] - 1.0

    cut = measure_safe_ratio(model, losses, "skip", LAYER_KEEP, IMGSZ)
    assert DEAD_SHARE - 0.01 <= cut.ratio < 0.9 and cut.breaking_task == "box"
    assert rise(cut.ratio) <= LOSS_BOUND < rise(cut.breaking_ratio)
    assert cut.breaking_ratio == round(cut.ratio + 0.01, 2)
    assert all(r > LOSS_BOUND for ratio, r in cut.tried if ratio > cut.ratio)
