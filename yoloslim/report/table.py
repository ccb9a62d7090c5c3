"""The seed-style comparison table: each row's cost and accuracy as a share of the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

COST_COLUMNS = ("Parameters", "GFLOPs", "Model Size")
ACCURACY_COLUMNS = {"map50": "mAP50", "map50_95": "mAP50-95", "mask_map50_95": "mask mAP50-95",
                    "pose_map50_95": "pose mAP50-95", "top1": "top-1", "top5": "top-5"}
BOX_ACCURACY = ("map50", "map50_95")  # shown, as "–", when no row was validated


def accuracy_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The accuracy columns the rows have values for, in table order (a task's own metrics next to box mAP)."""
    found = [key for key in ACCURACY_COLUMNS if any(row.get(key) is not None for row in rows)]
    return found or list(BOX_ACCURACY)


def _pct(value: float, base: float) -> str:
    return f"({100.0 * value / base:.1f}%)" if base else ""


def _delta(value: float, base: float) -> str:
    return f"({value - base:+.3f})"


def _cells(row: dict[str, Any], base: dict[str, Any] | None, accuracy: Sequence[str]) -> list[str]:
    cells = []
    for key, fmt in (("params", "{:,}"), ("gflops", "{:.2f}"), ("size_mb", "{:.2f}MB")):
        value = row.get(key)
        text = fmt.format(value) if value is not None else "–"
        if base is not None and value is not None and base.get(key):
            text += _pct(value, base[key])
        cells.append(text)
    for key in accuracy:
        value = row.get(key)
        text = f"{value:.3f}" if value is not None else "–"
        if base is not None and value is not None and base.get(key) is not None:
            text += _delta(value, base[key])
        cells.append(text)
    value = row.get("latency_ms")
    text = f"{value:.2f}ms" if value is not None else "–"
    if base is not None and value is not None and base.get("latency_ms"):
        text += _pct(value, base["latency_ms"])
    cells.append(text)
    return cells


def markdown_table(rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None = None) -> str:
    """Markdown table; every row is a dict with ``name`` and any of params, gflops, size_mb, latency_ms and the
    accuracy keys of :data:`ACCURACY_COLUMNS`. Rows other than the baseline show % of baseline (accuracy as a
    difference)."""
    accuracy = accuracy_keys([*rows, *([baseline] if baseline else [])])
    columns = [*COST_COLUMNS, *(ACCURACY_COLUMNS[key] for key in accuracy), "Inference Time"]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    if baseline is not None:
        lines.append(f"| {baseline.get('name', 'BaseLine')} | " + " | ".join(_cells(baseline, None, accuracy)) + " |")
    for row in rows:
        lines.append(f"| {row.get('name', '')} | " + " | ".join(_cells(row, baseline, accuracy)) + " |")
    return "\n".join(lines)


def comparison_row(name: str, model: str | Path | nn.Module, imgsz: int, data: str | Path | None = None,
                   batch: int = 16, device: str = "cpu", latency: bool = True) -> dict[str, Any]:
    """One table row: what the model costs and, when a dataset is given, its accuracy."""
    from yoloslim.engine.validate import validate
    from yoloslim.report.metrics import measure

    row = {"name": name, **measure(model, imgsz=imgsz, latency=latency)}
    if data is not None:
        row.update(validate(model, data, imgsz=imgsz, batch=batch, device=device))
    return row
