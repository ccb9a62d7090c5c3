"""What pruning did, for people and scripts: report.json, report.md and channels.png in the output folder.

Rows are ``{"name", params, gflops, size_mb, latency_ms, map50, map50_95}`` dicts (the baseline
first); every later row also gets its cost as % of the baseline, so the json is self-contained.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

from yoloslim.engine.checkpoint import atomic_write_bytes
from yoloslim.report.table import ACCURACY_COLUMNS

RELATIVE_KEYS = ("params", "gflops", "size_mb", "latency_ms", *ACCURACY_COLUMNS)


def with_percentages(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    base = rows[0]
    out = [dict(base)]
    for row in rows[1:]:
        pct = {k: round(100.0 * row[k] / base[k], 2) for k in RELATIVE_KEYS
               if row.get(k) is not None and base.get(k)}
        out.append({**row, "pct_of_baseline": pct})
    return out


def markdown_report(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    from yoloslim.report.table import markdown_table

    target = summary.get("target_speed_up")
    goal = f"target {target:.2f}x" if target else f"prune ratio {summary.get('prune_ratio')}"
    status = "reached" if summary.get("reached") else f"NOT reached — {summary.get('note')}"
    reached = f"speed-up {summary['speed_up']:.3f}x ({status})"
    if summary.get("latency"):
        goal = f"latency target {target:.2f}x"
        reached = (f"measured latency speed-up {summary['latency']['measured_speed_up']:.3f}x ({status}), "
                   f"GFLOPs speed-up {summary['speed_up']:.3f}x")
    lines = [
        "# Pruning report",
        "",
        f"- method: `{summary['method']}`; {goal}; {reached}",
        f"- GFLOPs at {summary['imgsz']} px: {summary['base_gflops']:.2f} -> {summary['gflops']:.2f}; "
        f"{summary['steps']} planner step(s), {summary['seconds']:.1f} s",
        f"- BatchNorm statistics re-estimated on {summary['recalib_batches']} training batches after pruning"
        if summary.get("recalib_batches") else "- BatchNorm statistics: as the unpruned model left them",
        "",
        markdown_table(rows[1:], baseline=rows[0]),
        "",
        "Latency: ONNX Runtime, CPU, batch 1. Accuracy is shown where a dataset was given; "
        "differences to the baseline are in brackets.",
        "",
    ]
    if summary.get("latency"):
        lines += latency_lines(summary["latency"], summary["speed_up"])
    if summary.get("stages"):
        lines += ["## Stages", "", "| stage | target | speed-up | params | mAP50-95 after pruning | "
                  "mAP50-95 after the stage's finetune |", "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['stage']} | {s['target']:.3f}x | {s['speed_up']:.3f}x | {s['params']:,} | "
                  f"{s['map50_95_pruned']:.3f} | "
                  + ("–" if s["map50_95_finetuned"] is None else f"{s['map50_95_finetuned']:.3f}") + " |"
                  for s in summary["stages"]]
        lines.append("")
    if summary.get("units"):
        lines += ["## Units (PAGCP)", "", "Each dependency group in visiting order: the ratio its loss bound allowed, "
                  "the task that broke the bound at the next ratio, and the channels the round's result removed "
                  "(top-P and landing).", "", "| round | visit | unit | ratio | removed / channels | breaking task |",
                  "|---:|---:|---|---:|---:|---|"]
        lines += [f"| {u['round']} | {u['visit']} | `{u['unit']}` | {u['ratio']:.2f} | {u['applied']} / "
                  f"{u['channels']} | {u['breaking_task'] or '–'} |" for u in summary["units"]]
        lines.append("")
    lines += ["## Protected modules", ""]
    lines += [f"- `{p['module']}` — {p['reason']}" for p in summary["protected"]] or ["- none"]
    if summary.get("rewritten"):
        lines += ["", "## Rewritten for pruning (same outputs, split-free)", "",
                  ", ".join(f"`{n}`" for n in summary["rewritten"])]
    return "\n".join(lines) + "\n"


def latency_lines(latency: dict[str, Any], gflops_speed_up: float) -> list[str]:
    """The latency target's section: predicted against measured, and both speed-ups."""
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f} ms"

    def ratio(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}x"

    table = "built" if not latency["table_reused"] else "reused"
    return ["## Latency target", "",
            f"{latency['runtime']} {latency['version']}, {latency['threads']} thread(s), {latency['imgsz']} px batch "
            f"{latency['batch']}; base and pruned timed alternately, median of {latency['runs']} runs each. "
            f"Latency table {table} ({latency['table_samples']} layer samples, {latency['table_seconds']} s): "
            f"`{latency['table']}`.", "",
            "| target | measured speed-up | predicted speed-up | GFLOPs speed-up | base | pruned (measured) | "
            "pruned (predicted) |", "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {ratio(latency['target_speed_up'])} | {ratio(latency['measured_speed_up'])} | "
            f"{ratio(latency['predicted_speed_up'])} | {gflops_speed_up:.3f}x | {ms(latency['base_ms'])} | "
            f"{ms(latency['ms'])} | {ms(latency['predicted_ms'])} |", ""]


def channels_png(channels: Sequence[dict[str, Any]], title: str) -> bytes:
    """Bar chart of every conv layer's output channels before and after pruning."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    width = max(8.0, 0.12 * len(channels))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    xs = range(len(channels))
    ax.bar(xs, [c["before"] for c in channels], color="#c8d6e5", label="before", width=0.9)
    ax.bar(xs, [c["after"] for c in channels], color="#2e86de", label="after", width=0.9)
    ax.set_xlabel("conv layer (model order)")
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.legend()
    if len(channels) <= 60:
        ax.set_xticks(list(xs), [c["layer"] for c in channels], rotation=90, fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_report(out: str | Path, summary: dict[str, Any], rows: Sequence[dict[str, Any]],
                 channels: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """Write the three report files atomically; returns their paths by kind."""
    out = Path(out)
    rows = with_percentages(rows)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "channels.png"}
    document = {**summary, "rows": rows, "channels": list(channels)}
    atomic_write_bytes(paths["json"], (json.dumps(document, indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], markdown_report(summary, rows).encode())
    title = f"{summary['method']}: {summary['speed_up']:.2f}x fewer GFLOPs"
    atomic_write_bytes(paths["png"], channels_png(channels, title))
    return paths


def write_sweep_report(out: str | Path, summaries: Sequence[dict[str, Any]],
                       rows: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """One table for several prune ratios (baseline first, one row per ratio); each ratio's own
    report, pruned.pt and channels.png are in its subfolder."""
    from yoloslim.report.table import markdown_table

    out = Path(out)
    rows = with_percentages(rows)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    atomic_write_bytes(paths["json"], (json.dumps({"runs": list(summaries), "rows": rows}, indent=2) + "\n").encode())
    lines = ["# Pruning sweep", ""]
    lines += [f"- `{s['method']}` ratio {s['prune_ratio']}: {s['speed_up']:.3f}x fewer GFLOPs at {s['imgsz']} px "
              f"({s['note']})" for s in summaries]
    lines += ["", markdown_table(rows[1:], baseline=rows[0]), "",
              "Before finetuning. Latency: ONNX Runtime, CPU, batch 1; ONNX file sizes are in report.json "
              "(`onnx_mb`). mAP where a dataset was given; differences to the baseline in brackets.", ""]
    atomic_write_bytes(paths["md"], "\n".join(lines).encode())
    return paths
