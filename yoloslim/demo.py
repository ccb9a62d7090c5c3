"""The quick-start demo: the whole workflow on built-in synthetic data, in minutes on a laptop CPU.

synth digits → train yolov8n → prune (LAMP, 2.0x) → finetune with distillation from the unpruned
teacher → val → export ONNX → the comparison table. Sizes are chosen so the run fits in about
ten minutes on 2 CPU cores; the numbers are a smoke test of the tooling, not a benchmark
(see docs/BENCHMARKS.md for those).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from yoloslim.engine.checkpoint import atomic_write_bytes


@dataclass
class DemoPlan:
    n_train: int = 300
    n_val: int = 60
    imgsz: int = 128
    epochs: int = 20
    finetune_epochs: int = 8
    speed_up: float = 2.0
    method: str = "lamp"
    batch: int = 8
    seed: int = 0

    # seconds per image per epoch on 2 CPU cores at 128 px (measured; scales with pixel count)
    SECONDS_PER_IMAGE_EPOCH = 0.037

    def train_recipe(self) -> dict:
        """A short from-scratch run learns only with many optimizer steps: step every batch (nbs =
        batch; the default nbs 64 would accumulate 8 batches), no mosaic (it halves digits at
        128 px), one warm-up epoch. benchmarks/demo_recipe.py: mAP50 0.112 after 12 epochs vs 0.041
        when accumulating to ultralytics' nominal batch of 64."""
        return dict(batch=self.batch, nbs=self.batch, mosaic=0.0, warmup_epochs=1, optimizer="AdamW", lr0=0.002,
                    seed=self.seed, plots=False)

    def estimate_seconds(self) -> float:
        per_epoch = self.n_train * self.SECONDS_PER_IMAGE_EPOCH * (self.imgsz / 128) ** 2
        return 40 + per_epoch * (self.epochs + 1.5 * self.finetune_epochs)


def _step(index: int, total: int, text: str) -> Callable[[], None]:
    start = time.perf_counter()
    print(f"\n[{index}/{total}] {text}", flush=True)
    return lambda: print(f"[{index}/{total}] done in {time.perf_counter() - start:.0f} s", flush=True)


def run_demo(out: str | Path = "runs/demo", plan: DemoPlan | None = None) -> str:
    """Run the whole workflow into ``out`` and return the markdown comparison table."""
    from yoloslim.data import generate_dataset
    from yoloslim.distill.api import distill
    from yoloslim.engine.checkpoint import save_model_checkpoint
    from yoloslim.engine.export import export_onnx
    from yoloslim.engine.train import train
    from yoloslim.prune.api import prune_model
    from yoloslim.prune.recalibrate import DEFAULT_RECALIB_BATCHES, recalibrate_bn
    from yoloslim.report.table import comparison_row, markdown_table

    plan = plan or DemoPlan()
    out = Path(out).resolve()
    total = 6
    print(
        f"yoloslim demo — writes to {out}\n"
        f"  1. synthesize {plan.n_train}+{plan.n_val} digit images at {plan.imgsz} px (scikit-learn digits on photos)\n"
        f"  2. train yolov8n from scratch for {plan.epochs} epochs (the baseline)\n"
        f"  3. prune it with {plan.method.upper()} to {plan.speed_up}x fewer FLOPs, recalibrate BatchNorm\n"
        f"  4. finetune the pruned model {plan.finetune_epochs} epochs, distilled from the baseline (L2 logits + CWD)\n"
        f"  5. validate and time all three models (ONNX Runtime, CPU, batch 1)\n"
        f"  6. export the result to ONNX and check it against PyTorch\n"
        f"Expected time: about {plan.estimate_seconds() / 60:.0f} minutes on 2 CPU cores.",
        flush=True,
    )
    done = _step(1, total, "synthesizing the dataset")
    data = generate_dataset("digits", out / f"digits-{plan.n_train}-{plan.n_val}-{plan.imgsz}-{plan.seed}",
                            n_train=plan.n_train, n_val=plan.n_val, imgsz=plan.imgsz, seed=plan.seed)
    done()

    common = dict(imgsz=plan.imgsz, project=out, **plan.train_recipe())
    done = _step(2, total, "training the baseline")
    baseline = train("yolov8n.yaml", data, epochs=plan.epochs, name="baseline", **common).best
    done()

    done = _step(3, total, f"pruning to {plan.speed_up}x")
    pruned = prune_model(str(baseline), method=plan.method, speed_up=plan.speed_up, imgsz=plan.imgsz, data=data)
    recalibrate_bn(pruned.model, data, DEFAULT_RECALIB_BATCHES, imgsz=plan.imgsz, batch=plan.batch)
    pruned_path = save_model_checkpoint(pruned.model, out / "pruned.pt", meta={"pruned": pruned.summary()})
    print(f"reached {pruned.speed_up:.2f}x in {pruned.seconds:.1f} s ({pruned.params:,} of {pruned.base_params:,} "
          f"parameters)", flush=True)
    done()

    done = _step(4, total, "finetuning with distillation")
    finetuned = distill(str(pruned_path), data, teacher=str(baseline), logit="l2", feature="cwd",
                        epochs=plan.finetune_epochs, name="finetune", **common).best
    done()

    done = _step(5, total, "validating and timing")
    label = f"{plan.method.upper()} {plan.speed_up}x"
    measured = dict(imgsz=plan.imgsz, data=data, batch=plan.batch)
    base_row = comparison_row("BaseLine yolov8n", baseline, **measured)
    rows = [comparison_row(f"{label} (BN recalibrated, no finetune)", pruned_path, **measured),
            comparison_row(f"{label} + distill finetune", finetuned, **measured)]
    done()

    done = _step(6, total, "exporting to ONNX")
    exported = export_onnx(finetuned, imgsz=plan.imgsz, out=out / "finetuned.onnx")
    print(f"{exported.path}: max abs difference to PyTorch {exported.max_abs_diff:.1e}", flush=True)
    done()

    table = markdown_table(rows, baseline=base_row)
    atomic_write_bytes(out / "report.md", (table + "\n").encode())
    atomic_write_bytes(out / "report.json", json.dumps({"plan": asdict(plan), "baseline": base_row, "rows": rows},
                                                       indent=2).encode())
    print(f"\n{table}\n\nimgsz {plan.imgsz}; latency = ONNX Runtime, CPU, batch 1. Report: {out / 'report.md'}")
    return table
