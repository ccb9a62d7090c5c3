"""One row per task: the baseline, an unpruned control trained as long, and lamp 2.0x + finetune, by the task's metric.

    python benchmarks/tasks.py [--tasks detect segment pose obb classify] [--out runs/benchmarks/tasks]

For each task: ``generate_dataset(--kind, task=T)`` data, the task's yolov8n yaml trained ``--epochs`` epochs
from scratch (the baseline), then pruned with lamp to 2.0x fewer GFLOPs, BatchNorm recalibrated on 16 training
batches and finetuned ``--finetune-epochs`` epochs. The control continues the baseline for the same
``--finetune-epochs`` with the same finetune call, so "pruned + finetune" against "control" is the cost of
pruning at equal training, and against "baseline" what a user sees. Every run uses the methods benchmark's
recipe (AdamW lr 0.002, a step every batch, one warm-up epoch, no mosaic). Every finished step is cached in
``--out``, so an interrupted run continues; the settings are stored there too, and a run with other settings
is refused (use another ``--out``). Writes ``<out>/tasks.json`` and ``tasks.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods_lib import StepCache, write_json  # noqa: E402

MODELS = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml",
          "obb": "yolov8n-obb.yaml", "classify": "yolov8n-cls.yaml"}
METHOD = "lamp"
TARGET = 2.0
RECALIB_BATCHES = 16


def log(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--kind", default="shapes", choices=("shapes", "digits"))
    p.add_argument("--train", type=int, default=300, help="training images per task")
    p.add_argument("--val", type=int, default=100, help="validation images per task")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--epochs", type=int, default=60, help="baseline epochs")
    p.add_argument("--finetune-epochs", type=int, default=20, help="epochs of the pruned model and of the control")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="runs/benchmarks/tasks")
    return p.parse_args(argv)


def check_settings(out: Path, args: argparse.Namespace) -> None:
    """The cache holds steps of one set of settings; another set would mix results silently."""
    settings = {k: v for k, v in vars(args).items() if k not in ("tasks", "out")}
    stored = out / "settings.json"
    if stored.is_file() and json.loads(stored.read_text()) != settings:
        raise SystemExit(f"{out} holds a run with other settings ({stored.read_text().strip()}) — use another --out")
    write_json(stored, settings)


def run_task(task: str, args: argparse.Namespace, out: Path, steps: StepCache) -> dict[str, Any]:
    import torch

    from yoloslim.data import generate_dataset
    from yoloslim.demo import DemoPlan
    from yoloslim.engine.checkpoint import save_model_checkpoint
    from yoloslim.engine.tasks import TASKS
    from yoloslim.engine.train import train
    from yoloslim.engine.validate import validate
    from yoloslim.prune.api import finetune, prune_model
    from yoloslim.prune.recalibrate import recalibrate_bn
    from yoloslim.report.metrics import measure

    data = str(generate_dataset(args.kind, out / "data" / task, n_train=args.train, n_val=args.val,
                                imgsz=args.imgsz, seed=0, task=task))
    runs = out / "runs" / task
    recipe = {**DemoPlan(batch=args.batch).train_recipe(), "imgsz": args.imgsz, "workers": 0, "device": "cpu",
              "exist_ok": True}

    def baseline() -> dict[str, Any]:
        torch.manual_seed(0)
        return {"weights": str(train(MODELS[task], data, epochs=args.epochs, project=runs, name="baseline",
                                     **recipe).best)}

    base = steps.get_or_run(f"{task}-baseline", baseline)["weights"]

    def control() -> dict[str, Any]:
        return {"weights": str(finetune(base, data, epochs=args.finetune_epochs, project=runs, name="control",
                                        **recipe).best)}

    def pruned() -> dict[str, Any]:
        result = prune_model(base, method=METHOD, speed_up=TARGET, imgsz=args.imgsz, data=data)
        recalibrate_bn(result.model, data, RECALIB_BATCHES, imgsz=args.imgsz, batch=args.batch, progress=False)
        weights = save_model_checkpoint(result.model, runs / "pruned.pt", meta={"pruned": result.summary()})
        tuned = finetune(weights, data, epochs=args.finetune_epochs, project=runs, name="pruned-finetune", **recipe)
        return {"weights": str(weights), "finetuned": str(tuned.best), "speed_up": result.speed_up}

    tuned_control = steps.get_or_run(f"{task}-control", control)["weights"]
    lamp = steps.get_or_run(f"{task}-{METHOD}", pruned)

    def row(name: str, weights: str) -> dict[str, Any]:
        return {"name": name, **measure(weights, imgsz=args.imgsz, latency=False),
                **validate(weights, data, imgsz=args.imgsz, batch=args.batch)}

    rows = steps.get_or_run(f"{task}-rows", lambda: {"rows": [
        row(f"baseline ({args.epochs} epochs)", base),
        row(f"control (+{args.finetune_epochs} epochs, unpruned)", tuned_control),
        row(f"{METHOD} {TARGET}x + BN recalibration, before finetuning", lamp["weights"]),
        row(f"{METHOD} {TARGET}x + {args.finetune_epochs} epochs finetuning", lamp["finetuned"])]})["rows"]
    return {"task": task, "model": MODELS[task], "metric": TASKS[task].primary, "label": TASKS[task].primary_label,
            "speed_up": lamp["speed_up"], "rows": rows}


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, machine: str, seconds: float) -> str:
    lines = ["| task | model | metric | baseline | control | GFLOPs speed-up | pruned, before finetune | "
             "pruned + finetune (vs baseline, vs control) | params base → pruned | box mAP50-95 base / control / "
             "pruned + finetune |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        base, control, cut, tuned = r["rows"]
        key = r["metric"]
        box = (f"{base['map50_95']:.3f} / {control['map50_95']:.3f} / {tuned['map50_95']:.3f}"
               if "map50_95" in base else "–")
        lines.append(f"| {r['task']} | `{r['model']}` | {r['label']} | {base[key]:.3f} | {control[key]:.3f} | "
                     f"{r['speed_up']:.3f}x | {cut[key]:.3f} | {tuned[key]:.3f} ({tuned[key] - base[key]:+.3f}, "
                     f"{tuned[key] - control[key]:+.3f}) | {base['params']:,} → {tuned['params']:,} | {box} |")
    lines += ["", f"Data: `yoloslim synth --kind {args.kind} --task <task> --train {args.train} --val {args.val} "
                  f"--imgsz {args.imgsz}`; baseline {args.epochs} epochs from scratch, control and pruned model "
                  f"{args.finetune_epochs} more, batch {args.batch}, {args.imgsz} px. Machine: {machine}. "
                  f"Compute: {seconds / 60:.0f} min."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.report.machine import describe_machine

    args = parse_args(argv)
    out = Path(args.out).resolve()
    check_settings(out, args)
    steps = StepCache(out / "cache")
    results = []
    for task in args.tasks:
        started = time.perf_counter()
        results.append(run_task(task, args, out, steps))
        log(f"{task} done in {time.perf_counter() - started:.0f} s")
    machine = describe_machine()
    write_json(out / "tasks.json", {"settings": vars(args), "machine": machine, "results": results,
                                    "seconds": steps.seconds})
    text = markdown(results, args, machine, sum(steps.seconds.values()))
    (out / "tasks.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
