"""Is a sparse-trained model ready to slim? The gap between undefended and defended BN |γ|, and the safe ratio.

Sparse training pushes down the γ the loss does not defend; classic slimming's global threshold should then
fall into the gap between those and the rest. The verdict looks for that gap in the |γ| of the BNs classic
slimming ranks (the penalized ones, :mod:`yoloslim.sparsity.selection`), on a log scale:

* **gap**: the widest band of log |γ| that holds at most ``GAP_SHARE`` of the channels (a few channels in
  transit may sit inside it), with at least ``EDGE_SHARE`` of the channels on each side — the sparse tails
  of any trained model would otherwise look like gaps. Its edges are the last channel below it and the first
  above it; ``gap_ratio`` is upper / lower edge. |γ| under ``FLOOR`` × the 90th percentile count as that
  floor (in the ratio too), so noise among near-zero γ (zeros have no logarithm) is never taken for the gap.
* **safe ratio**: every channel up to the largest step between neighbouring |γ| inside the gap — so no
  channel at or above the gap's upper edge is cut — rounded down to hundredths. Where that cut would take
  every channel of some layer (a branch the loss does not defend at all), the verdict also records
  ``--layer-keep`` ``LAYER_KEEP``, which keeps a sliver of it: classic slimming refuses to empty a layer.
* **separated** when the gap is at least ``MIN_GAP_RATIO`` wide, at least ``MIN_CONTRAST`` times as wide
  as the median band of the same share (a broad but unimodal |γ| distribution has wide bands everywhere),
  and the safe ratio is at least ``MIN_SAFE_RATIO`` (a smaller cut is not worth a prune).

The thresholds were set against the 18 sparse runs of ``benchmarks/sparse_defaults.py`` (8 epochs from the
digits benchmark's yolov8n; docs/BENCHMARKS.md). There the best runs (AdamW at lr 0.002, a step every batch)
opened gaps of only 1.16-1.18x, at |γ| 0.83-0.97: a cut at 0.5 cost them nothing, but the cut up to their gap
(ratio 0.83) lost 0.39 mAP50-95. The channels below such a gap are weaker, not undefended, so a gap counts
only when its lower edge is at most half its upper edge (``MIN_GAP_RATIO``): none of those runs passed. With
the penalized γ at a lr of their own (6 x lr0, the defaults of :mod:`yoloslim.sparsity.defaults`) the gaps were
3.7-3.9x on digits and 2.0x on the shapes data, right at that bound.

That is why a sparse run ends by *measuring* the safe ratio on its checkpoints (:mod:`yoloslim.sparsity.measured_cut`:
the largest cut whose detection loss stays near the uncut model's) and records that verdict instead
(:func:`with_measured_cut`); the per-epoch columns stay the |γ| gap's, which costs no forward pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from yoloslim.errors import UserError
from yoloslim.sparsity.selection import BNSelection

GAP_SHARE = 0.05
EDGE_SHARE = 0.1
FLOOR = 0.01
MIN_GAP_RATIO = 2.0
MIN_CONTRAST = 5.0
MIN_SAFE_RATIO = 0.1
RATIO_STEPS = 100  # the safe ratio is rounded down to 1/RATIO_STEPS
LAYER_KEEP = 0.01  # recorded with a safe cut that would empty a layer
COLUMNS = {"gap": "sparse/gap_ratio", "safe": "sparse/safe_ratio"}
NOT_SEPARATED_LINE = "not separated yet: train longer or raise --sr"


@dataclass(frozen=True)
class Verdict:
    """Plain data, so it can be stored in a checkpoint's yoloslim record and read back by ``prune``."""

    channels: int
    gap_low: float  # |γ| of the last channel below the gap
    gap_high: float  # |γ| of the first channel above it
    gap_ratio: float
    contrast: float
    safe_ratio: float  # 0.0 when not separated
    threshold: float  # classic slimming's |γ| threshold at the safe ratio (nan when not separated)
    separated: bool
    shortcut: str = "skip"  # the --shortcut whose channel pool this judged
    layer_keep: float | None = None  # the --layer-keep the safe cut needs (it would empty a layer otherwise)
    loss_bound: float | None = None  # set when the safe ratio was measured (yoloslim.sparsity.measured_cut)
    round_up: int | None = None  # the --round-up the measured cut used

    def columns(self) -> dict[str, float]:
        """The results.csv columns of one epoch."""
        return {COLUMNS["gap"]: self.gap_ratio, COLUMNS["safe"]: self.safe_ratio}

    def describe(self) -> str:
        gap = f"gap {self.gap_ratio:.3g}x (|γ| {self.gap_low:.3g}–{self.gap_high:.3g}, contrast {self.contrast:.3g})"
        if self.loss_bound is not None:
            measured = f"measured safe ratio {self.safe_ratio:g} (every task loss within +{self.loss_bound:.0%})"
            return f"{gap}, {measured if self.separated else 'no measured cut is safe'}"
        return f"{gap}, safe ratio {self.safe_ratio:g}" if self.separated else f"{gap}, not separated"

    def line(self, speed_up: float | None = None) -> str:
        """The one line a sparse run ends with."""
        if not self.separated:
            return NOT_SEPARATED_LINE
        keep = f" --layer-keep {self.layer_keep:g}" if self.layer_keep else ""
        keep += f" --round-up {self.round_up}" if self.round_up else ""
        estimate = f" (≈ {speed_up:.2f} x)" if speed_up else ""
        return f"ready: --prune-ratio up to {self.safe_ratio:g}{keep}{estimate}"

    def as_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "Verdict":
        return cls(**record)


def layer_tops(model: nn.Module, selection: BNSelection) -> torch.Tensor:
    """Each channel group's largest |γ|: a global cut that reaches it removes the whole layer."""
    params = dict(model.named_parameters())
    tops = [max(float(params[m.param].detach().abs()[list(m.index)].max()) for m in group.bn_members)
            for group in selection.groups if group.bn_members]
    return torch.tensor(tops, dtype=torch.float64)


def judge(values: torch.Tensor, tops: torch.Tensor, shortcut: str = "skip") -> Verdict:
    """The verdict on the pooled |γ| ``values`` of the BNs slimming ranks, ``tops`` from :func:`layer_tops`."""
    v = values.detach().double().abs().sort().values
    n = len(v)
    inside = int(GAP_SHARE * n)
    first, last = math.ceil(EDGE_SHARE * n), n - math.ceil(EDGE_SHARE * n) - inside - 1
    if n == 0 or first < 1 or last < first:
        return Verdict(n, math.nan, math.nan, 1.0, 0.0, 0.0, math.nan, False, shortcut)
    floor = max(FLOOR * float(torch.quantile(v, 0.9)), 1e-12)
    x = v.clamp_min(floor).log()
    below = torch.arange(first, last + 1)  # channels below the gap, per candidate
    widths = x[below + inside] - x[below - 1]
    k = int(below[int(widths.argmax())])
    width, median = float(widths.max()), float(widths.median())
    contrast = width / median if median > 0 else (math.inf if width > 0 else 0.0)
    steps = x[k:k + inside + 1] - x[k - 1:k + inside]
    cut = k + int(steps.argmax())
    separated = math.exp(width) >= MIN_GAP_RATIO and contrast >= MIN_CONTRAST and cut >= MIN_SAFE_RATIO * n
    safe = RATIO_STEPS * cut // n / RATIO_STEPS if separated else 0.0
    count = int(safe * n)
    empties_layer = separated and len(tops) > 0 and count > int((v < tops.min()).sum())
    threshold = float(v[min(count, n - 1)]) if separated else math.nan
    return Verdict(n, float(v[k - 1]), float(v[k + inside]), math.exp(width), contrast, safe, threshold,
                   separated, shortcut, LAYER_KEEP if empties_layer else None)


def with_measured_cut(verdict: Verdict, cut, values) -> Verdict:
    """``verdict`` with the safe ratio a measurement found (a :class:`~yoloslim.sparsity.measured_cut.MeasuredCut`
    on the same model): what the loss says replaces what the |γ| histogram says; ``values`` are the pooled |γ|,
    for the cut's threshold."""
    from dataclasses import replace

    v = torch.as_tensor(values).double().abs().sort().values
    separated = cut.ratio >= MIN_SAFE_RATIO
    threshold = float(v[min(int(cut.ratio * len(v)), len(v) - 1)]) if separated and len(v) else math.nan
    return replace(verdict, safe_ratio=cut.ratio if separated else 0.0, separated=separated, threshold=threshold,
                   layer_keep=cut.layer_keep if separated else None, loss_bound=cut.bound,
                   round_up=cut.round_up if separated else None)


def judge_model(model: nn.Module, selection: BNSelection, shortcut: str = "skip") -> Verdict:
    """:func:`judge` on the penalized BNs of ``model`` (``selection`` names them and their channel groups)."""
    from yoloslim.sparsity.stats import abs_gammas

    return judge(abs_gammas(model, selection.penalized), layer_tops(model, selection), shortcut)


def shortcut_for(penalize_coupled: bool) -> str:
    """The --shortcut whose pool matches the penalized BNs: coupled BNs join the cut only with ``union``."""
    return "union" if penalize_coupled else "skip"


def recorded_verdict(meta: dict, source: str, shortcut: str) -> Verdict:
    """The separated verdict the sparse run recorded in a model's yoloslim record; one-line errors otherwise."""
    record = (meta.get("sparse") or {}).get("verdict")
    if not record:
        raise UserError(f"{source} records no safe prune ratio (only `yoloslim sparse` runs record one) — "
                        f"pass --prune-ratio R")
    verdict = Verdict.from_record(record)
    if not verdict.separated:
        why = (f"no cut of at least {MIN_SAFE_RATIO:g} kept every task loss within +{verdict.loss_bound:.0%}"
               if verdict.loss_bound is not None else f"sparse training has not separated its BN γ yet (gap "
               f"{verdict.gap_ratio:.3g}x)")
        raise UserError(f"{source}: {why}, so it records no safe ratio — train longer or raise --sr, or pass "
                        f"--prune-ratio R")
    if verdict.shortcut != shortcut:
        raise UserError(f"{source}'s safe ratio was judged for --shortcut {verdict.shortcut}, not {shortcut} — "
                        f"pass --shortcut {verdict.shortcut} or --prune-ratio R")
    return verdict


def slimmed_speed_up(module: nn.Module, verdict: Verdict, imgsz: int) -> float:
    """GFLOPs of ``module`` over those of its copy slimmed at the safe ratio (the planner's --speed-up scale)."""
    from yoloslim.prune.classic import slim_prune_model

    return slim_prune_model(module, verdict.safe_ratio, shortcut=verdict.shortcut, layer_keep=verdict.layer_keep,
                            round_up=verdict.round_up, imgsz=imgsz).speed_up
