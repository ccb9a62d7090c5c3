"""Figures of the |γ| distribution: across epochs of one run, and across several checkpoints (with the gap
and the safe cut of each separated one, :mod:`yoloslim.sparsity.verdict`).

Figures are drawn on a bare ``matplotlib.figure.Figure`` so no pyplot backend is touched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.sparsity.stats import PRUNE_FRACTIONS, SMALL_GAMMA

if TYPE_CHECKING:
    from yoloslim.sparsity.verdict import Verdict

BINS = 80


def _save(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _edges(arrays: Sequence[np.ndarray]) -> np.ndarray:
    top = max((float(a.max()) for a in arrays if len(a)), default=1.0)
    return np.linspace(0.0, top if top > 0 else 1.0, BINS + 1)


def plot_gamma_history(history: Sequence[tuple[int, np.ndarray]], path: str | Path) -> Path:
    """Heatmap: one row per epoch, the share of channels in each |γ| bin, with the 50%/80% cut lines."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    epochs = [e for e, _ in history]
    arrays = [a for _, a in history]
    edges = _edges(arrays)
    shares = np.stack([np.histogram(a, bins=edges)[0] / max(len(a), 1) for a in arrays])
    fig = Figure(figsize=(8, 1.5 + 0.25 * min(len(epochs), 40)))
    ax = fig.subplots()
    floor = 1.0 / max(max(len(a) for a in arrays), 1)
    mesh = ax.pcolormesh(edges, np.arange(len(epochs) + 1), np.maximum(shares, floor / 10),
                         norm=LogNorm(vmin=floor / 10, vmax=1.0), cmap="magma", shading="flat")
    fig.colorbar(mesh, ax=ax, label="share of channels")
    rows = np.arange(len(epochs)) + 0.5
    for fraction, style in zip(PRUNE_FRACTIONS, ("-", "--")):
        cuts = [np.quantile(a, fraction, method="higher") if len(a) else np.nan for a in arrays]
        ax.plot(cuts, rows, style, color="cyan", lw=1.2, label=f"cut for {fraction:.0%} pruning")
    ax.axvline(SMALL_GAMMA, color="white", lw=0.8, ls=":", label=f"|γ| = {SMALL_GAMMA:g}")
    step = max(1, len(epochs) // 20)
    ax.set_yticks(rows[::step], [str(e) for e in epochs][::step])
    ax.set_xlabel("|γ| of penalized BN channels")
    ax.set_ylabel("epoch")
    ax.set_title("BN γ distribution during sparse training")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    fig.tight_layout()
    return _save(fig, path)


def plot_gamma_overlay(series: Mapping[str, np.ndarray], path: str | Path,
                       verdicts: Mapping[str, Verdict] | None = None) -> Path:
    """Overlaid |γ| histograms (share of channels per bin, log scale) of several models; a model whose
    verdict is separated gets its gap shaded and its safe cut drawn in its own colour."""
    from matplotlib.figure import Figure

    verdicts = verdicts or {}
    edges = _edges(list(series.values()))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for label, values in series.items():
        share = np.histogram(values, bins=edges)[0] / max(len(values), 1)
        small = float((values < SMALL_GAMMA).mean()) if len(values) else float("nan")
        verdict = verdicts.get(label)
        judged = f"; {verdict.describe()}" if verdict else ""
        line = ax.stairs(share, edges, lw=1.5, label=f"{label}  (n={len(values)}, mean {values.mean():.3g}, "
                                                        f"{small:.0%} < {SMALL_GAMMA:g}{judged})")
        if verdict and verdict.separated:
            color = line.get_edgecolor()
            ax.axvspan(verdict.gap_low, verdict.gap_high, color=color, alpha=0.12, lw=0)
            cut = f"{label}: safe cut, --prune-ratio {verdict.safe_ratio:g} (|γ| < {verdict.threshold:.3g})"
            ax.axvline(verdict.threshold, color=color, lw=1.2, ls="--", label=cut)
    ax.axvline(SMALL_GAMMA, color="gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("|γ| of BN channels (shaded: the gap between undefended and defended γ)")
    ax.set_ylabel("share of channels")
    ax.set_title("BN γ distributions")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)
