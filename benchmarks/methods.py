"""The seed-style table for every pruning method on one model and dataset, from one command.

    OMP_NUM_THREADS=2 python benchmarks/methods.py [--quick] [--methods lamp l1 ...] [--speed-up 2.0] [--out DIR]
                                                   [--model yolo11n.yaml | best.pt] [--data data.yaml]
                                                   [--finetune-share 0.5 | --finetune-epochs N]

synth digits (or ``--data``) → yolov8n baseline (or ``--model``: a yaml is trained, a checkpoint is used as
the baseline; cached by a hash of its settings, reused across runs) → per method: sparse-train from the
baseline if the method needs it, prune to ``--speed-up`` (heads pruned inside, only prediction layers kept),
recalibrate BatchNorm, finetune → one row. Every row gets the same finetune budget, a stated share of the
baseline's epochs (default 50%). Then: lamp with the whole head protected (the old default), lamp and the
two best other methods pruned iteratively (``Plan.stages`` prunes with finetuning between them, the same
epochs in total), classic slimming at fixed ratios (``round_up`` 8, from the slim sparse checkpoint), the
same cuts (no finetuning) on the slim-sparse model and on an equally long continuation without penalty,
and the best method finetuned with yoloslim's distillation and with ultralytics' ``distill_model``, both
from the baseline. Every step is cached as JSON as soon as it finishes, so re-running the same command
resumes an interrupted run. Writes ``methods.md`` (tables), ``methods.json`` (raw) and ``methods.png``
(mAP50-95 vs GFLOPs) to ``--out``. ``--quick`` is a smoke test (3 methods, tiny budgets): its numbers say
nothing about the methods.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods_lib import (ALL_METHODS, DEFAULT_MODEL, Plan, StepCache, latencies, latency_table,  # noqa: E402
                          plot, sparse_vs_normal_table, stages_table, tool_table, write_json)
from yoloslim.report.machine import machine_info  # noqa: E402

DISTILL_TERMS = {"logit": "l2", "feature": "cwd"}
CLASSIC_ROUND_UP = 8
CLASSIC_LAYER_KEEP = 0.01  # without a floor a ratio above the smallest per-layer max |γ| would empty a layer


def log(text: str) -> None:
    print(f"[methods {time.strftime('%H:%M:%S')}] {text}", flush=True)


def architecture_hash(channels: list[dict[str, Any]]) -> str:
    """Short fingerprint of the pruned widths: equal across runs with the same seed (determinism check)."""
    widths = [(c["layer"], c["after"]) for c in channels]
    return hashlib.sha256(json.dumps(widths).encode()).hexdigest()[:12]


class Benchmark:
    def __init__(self, plan: Plan, out: Path, variants: bool = True) -> None:
        from yoloslim.demo import DemoPlan

        self.plan = plan
        self.variants = variants  # head-protected, iterative and ultralytics-distill rows (a selection, not a setting)
        self.out = out.resolve()
        self.recipe = {**DemoPlan(batch=plan.batch, seed=plan.seed).train_recipe(), **dict(plan.train_settings or ())}
        self.runs = self.out / "runs" / plan.rows_key()
        self.shared = StepCache(self.out / "cache")
        self.steps = StepCache(self.out / "cache" / plan.rows_key())
        self.data: Path | None = None

    def train_args(self, name: str) -> dict[str, Any]:
        return dict(imgsz=self.plan.imgsz, project=self.runs, name=name, exist_ok=True, **self.recipe)

    def dataset(self) -> Path:
        from yoloslim.data import generate_dataset

        p = self.plan
        if p.data is not None:
            return Path(p.data)
        return generate_dataset("digits", self.out / "data" / f"digits-{p.n_train}-{p.n_val}-{p.imgsz}-{p.seed}",
                                n_train=p.n_train, n_val=p.n_val, imgsz=p.imgsz, seed=p.seed, show_progress=False)

    def baseline(self) -> str:
        from yoloslim.engine.train import train
        from yoloslim.models.load import resolve_spec

        model = self.plan.model or DEFAULT_MODEL
        resolved, is_checkpoint = resolve_spec(model)
        if is_checkpoint:
            return resolved  # the user's trained model is the baseline
        key = self.plan.baseline_key()

        def run() -> dict[str, Any]:
            log(f"training the baseline {model} ({self.plan.baseline_epochs} epochs)")
            started = time.perf_counter()
            result = train(model, self.data, epochs=self.plan.baseline_epochs,
                           **{**self.train_args(key), "project": self.out / "runs"})
            return {"weights": str(result.best), "train_seconds": time.perf_counter() - started}

        return self.shared.get_or_run(key, run)["weights"]

    def measure(self, name: str, weights: str | Path) -> dict[str, Any]:
        from yoloslim.report.table import comparison_row

        p = self.plan
        return {**comparison_row(name, Path(weights), p.imgsz, data=self.data, batch=p.batch, latency=False),
                "weights": str(weights), **latencies(Path(weights), p.imgsz, p.latency_runs, p.latency_threads)}

    def sparse(self, method: str, baseline: str, sr: float | None = None) -> str:
        """The baseline trained ``sparse_epochs`` more with ``method``'s penalty; ``sr=0`` is the same
        continuation without penalty (the control for the sparse-vs-normal comparison)."""
        from yoloslim.sparsity.api import sparse_train

        sr = self.plan.sr if sr is None else sr
        key = f"sparse-{method}" if sr == self.plan.sr else f"sparse-{method}-sr{sr:g}"

        def run() -> dict[str, Any]:
            log(f"sparse training for {method} ({self.plan.sparse_epochs} epochs, sr {sr:g})")
            started = time.perf_counter()
            # gamma_lr_scale 1: the recipe of the published tables (before the sparse default gave γ their own lr)
            result = sparse_train(baseline, self.data, sr=sr, method=method, gamma_lr_scale=1.0,
                                  epochs=self.plan.sparse_epochs, **self.train_args(key))
            return {"weights": str(result.last), "train_seconds": time.perf_counter() - started}

        return self.steps.get_or_run(key, run)["weights"]

    def sparse_vs_normal(self, baseline: str, sparse: str) -> dict[str, Any]:
        """The same classic cuts (no finetuning) on the slim-sparse model and on a continuation trained
        equally long without penalty: does sparse training make the cut cost less mAP?"""
        from yoloslim.engine.validate import validate
        from yoloslim.prune.classic import slim_prune_model
        from yoloslim.sparsity.compare import checkpoint_gammas

        normal = self.sparse("slim", baseline, sr=0.0)
        p = self.plan

        def run() -> dict[str, Any]:
            result = {}
            for kind, weights in (("normal", normal), ("sparse", sparse)):
                log(f"sparse vs normal: slimming the {kind} continuation at ratios {p.classic_ratios}")
                gammas = checkpoint_gammas(weights)
                rows = [{"ratio": 0.0, **validate(weights, self.data, imgsz=p.imgsz, batch=p.batch)}]
                for ratio in p.classic_ratios:
                    pruned = slim_prune_model(weights, prune_ratio=ratio, round_up=CLASSIC_ROUND_UP,
                                              layer_keep=CLASSIC_LAYER_KEEP, imgsz=p.imgsz)
                    rows.append({"ratio": ratio, "gflops": pruned.gflops,
                                 **validate(pruned.model, self.data, imgsz=p.imgsz, batch=p.batch)})
                result[kind] = {"weights": weights, "rows": rows, "gamma_median": float(np.median(gammas)),
                                "gamma_share_below_0.1": float((gammas < 0.1).mean())}
            return result

        return self.steps.get_or_run("sparse-vs-normal", run)

    def finetune_budget(self, baseline: str) -> int:
        """The plan's share of the baseline's epochs; a user's checkpoint says how long it trained."""
        from yoloslim.engine.checkpoint import read_checkpoint
        from yoloslim.errors import UserError
        from yoloslim.models.load import resolve_spec

        epochs = self.plan.baseline_epochs
        if self.plan.model and resolve_spec(self.plan.model)[1]:
            epochs = (read_checkpoint(baseline).get("train_args") or {}).get("epochs")
        try:
            return self.plan.finetune_budget(epochs)
        except ValueError:
            raise UserError(f"--model {self.plan.model} has no record of how many epochs it trained — pass "
                            f"--finetune-epochs") from None

    def pruned(self, key: str, prune: Callable[[], Any]) -> dict[str, Any]:
        """Prune, validate, recalibrate BN and validate again; cached with the checkpoint it wrote."""
        from yoloslim.engine.checkpoint import save_model_checkpoint
        from yoloslim.engine.validate import validate
        from yoloslim.prune.recalibrate import recalibrate_bn

        p = self.plan

        def run() -> dict[str, Any]:
            log(f"pruning: {key}")
            result = prune()
            before = validate(result.model, self.data, imgsz=p.imgsz, batch=p.batch)["map50_95"]
            recalibrated = None
            if p.recalib_batches:
                recalibrate_bn(result.model, self.data, p.recalib_batches, imgsz=p.imgsz, batch=p.batch,
                               progress=False)
                recalibrated = validate(result.model, self.data, imgsz=p.imgsz, batch=p.batch)["map50_95"]
            path = save_model_checkpoint(result.model, self.runs / f"{key}.pt", meta={"pruned": result.summary()})
            return {"weights": str(path), "prune": self._short(result.summary()),
                    "architecture": architecture_hash(result.channels), "map50_95_before_finetune": before,
                    "map50_95_recalibrated": recalibrated}

        return self.steps.get_or_run(f"pruned-{key}", run)

    @staticmethod
    def _short(summary: dict[str, Any]) -> dict[str, Any]:
        """The summary without its per-module lists (PAGCP's per-unit record stays in the checkpoint)."""
        return {k: v for k, v in summary.items() if k not in ("protected", "rewritten", "units")}

    def iterative(self, key: str, method: str, source: str, between: int) -> dict[str, Any]:
        """``method`` in ``plan.stages`` prunes with ``between`` finetune epochs after each but the last."""
        from yoloslim.engine.checkpoint import save_model_checkpoint
        from yoloslim.prune.iterative import iterative_prune, stages_summary

        p = self.plan

        def run() -> dict[str, Any]:
            log(f"pruning: {key} ({p.stages} stages, {between} epochs between them)")
            started = time.perf_counter()
            result, stages = iterative_prune(
                source, self.data, p.speed_up, p.stages, between, self.runs / f"stages-{key}",
                prune_options=dict(method=method, imgsz=p.imgsz, calib_batches=p.calib_batches, seed=p.seed),
                finetune_options=dict(imgsz=p.imgsz, exist_ok=True, **self.recipe), recalib=p.recalib_batches,
                log=log)
            records = stages_summary(stages)
            path = save_model_checkpoint(result.model, self.runs / f"{key}.pt",
                                         meta={"pruned": {**result.summary(), "stages": records}})
            return {"weights": str(path), "prune": self._short(result.summary()),
                    "architecture": architecture_hash(result.channels), "map50_95_before_finetune": None,
                    "map50_95_recalibrated": records[-1]["map50_95_pruned"], "stages": records,
                    "stage_epochs": between * (p.stages - 1),
                    "stage_train_seconds": time.perf_counter() - started - result.seconds}

        return self.steps.get_or_run(f"pruned-{key}", run)

    def row(self, key: str, name: str, pruned: dict[str, Any], epochs: int, teacher: str | None = None,
            ultralytics_distill: bool = False) -> dict[str, Any]:
        from yoloslim.distill.api import distill
        from yoloslim.prune.api import finetune

        def run() -> dict[str, Any]:
            how = "distilling" if teacher else "finetuning"
            log(f"{how}: {name} ({epochs} epochs)")
            started = time.perf_counter()
            args = self.train_args(f"finetune-{key}")
            if teacher and ultralytics_distill:
                result = finetune(pruned["weights"], self.data, epochs=epochs, distill_model=teacher, **args)
            elif teacher:
                result = distill(pruned["weights"], self.data, teacher=teacher, epochs=epochs, **DISTILL_TERMS, **args)
            else:
                result = finetune(pruned["weights"], self.data, epochs=epochs, **args)
            seconds = time.perf_counter() - started + pruned.get("stage_train_seconds", 0.0)
            kept = ("prune", "architecture", "map50_95_before_finetune", "map50_95_recalibrated", "stages")
            return {**self.measure(name, result.best), "train_seconds": seconds,
                    "train_epochs": epochs + pruned.get("stage_epochs", 0),
                    **{k: pruned[k] for k in kept if k in pruned}}

        row = self.steps.get_or_run(f"row-{key}", run)
        log(f"{name}: mAP50-95 {row['map50_95']:.3f}, {row['gflops']:.3f} GFLOPs, architecture {row['architecture']}")
        return row

    def unpruned_control(self, baseline: str, budget: int) -> dict[str, Any]:
        """The baseline trained the same extra epochs as every pruned row, unpruned: what pruning costs
        against equal training, next to what it costs against the baseline."""
        return self.row("unpruned-control", f"unpruned + {budget} epochs (control)",
                        {"weights": baseline, "architecture": "unpruned"}, budget)

    def source(self, method: str, baseline: str) -> str:
        from yoloslim.prune.methods import get_method

        return self.sparse(method, baseline) if get_method(method).needs_sparse_training else baseline

    def run(self) -> dict[str, Any]:
        from yoloslim.prune.api import prune_model
        from yoloslim.prune.classic import slim_prune_model

        p = self.plan
        self.data = self.dataset()
        baseline = self.baseline()
        base_row = self.steps.get_or_run("row-baseline", lambda: self.measure(f"BaseLine {p.model_name}", baseline))
        log(f"baseline: mAP50-95 {base_row['map50_95']:.3f} (mAP50 {base_row['map50']:.3f})")
        budget = self.finetune_budget(baseline)
        target = f"{p.speed_up:g}X"

        def planner(method: str, source: str, **options: Any) -> Callable[[], Any]:
            return lambda: prune_model(source, method=method, speed_up=p.speed_up, imgsz=p.imgsz, data=self.data,
                                       calib_batches=p.calib_batches, seed=p.seed, **options)

        rows = [self.unpruned_control(baseline, budget)]
        pruned_by_method, one_shot = {}, {}
        for method in p.methods:
            pruned_by_method[method] = self.pruned(method, planner(method, self.source(method, baseline)))
            rows.append(self.row(method, f"{method} {target}", pruned_by_method[method], budget))
            one_shot[method] = rows[-1]["map50_95"]

        ranked = sorted(p.methods, key=lambda m: -one_shot[m])
        if self.variants:
            pruned = self.pruned("lamp-protect-head", planner("lamp", baseline, protect_heads=True))
            rows.append(self.row("lamp-protect-head", f"lamp {target}, head protected", pruned, budget))
        between, after = p.stage_epochs(budget)
        iterative = (["lamp"] + [m for m in ranked if m != "lamp"])[:p.iterative_methods] if self.variants else []
        for method in iterative:
            key = f"{method}-{p.stages}stages"
            pruned = self.iterative(key, method, self.source(method, baseline), between)
            rows.append(self.row(key, f"{method} {target}, {p.stages} stages", pruned, after))

        slim_sparse = self.sparse("slim", baseline)
        for ratio in p.classic_ratios:
            key = f"classic-slim-{ratio:g}"
            pruned = self.pruned(key, lambda: slim_prune_model(slim_sparse, prune_ratio=ratio,
                                                               round_up=CLASSIC_ROUND_UP,
                                                               layer_keep=CLASSIC_LAYER_KEEP, imgsz=p.imgsz))
            rows.append(self.row(key, f"classic slim ratio {ratio:g} (round up {CLASSIC_ROUND_UP})", pruned, budget))

        control = self.sparse_vs_normal(baseline, slim_sparse)
        best = ranked[0]
        rows.append(self.row(f"{best}-distill", f"{best} {target} + distill "
                                                f"({DISTILL_TERMS['logit']}+{DISTILL_TERMS['feature']})",
                             pruned_by_method[best], budget, teacher=baseline))
        if self.variants:
            rows.append(self.row(f"{best}-ultralytics-distill", f"{best} {target} + ultralytics distill_model",
                                 pruned_by_method[best], budget, teacher=baseline, ultralytics_distill=True))
        return {"baseline": base_row, "rows": rows, "best_method": best, "sparse_vs_normal": control,
                "finetune_epochs": budget}


def report(result: dict[str, Any], plan: Plan, command: str, wall: float, step_seconds: dict[str, float],
           out: Path) -> str:
    from yoloslim.report.table import markdown_table

    base, rows = result["baseline"], result["rows"]
    iterative = [row for row in rows if row.get("stages")]
    text = "\n\n".join(part for part in [
        markdown_table(rows, baseline=base),
        f"Latency (ONNX Runtime, CPU, {plan.latency_threads} thread(s), median of {plan.latency_runs} runs "
        f"after 3 warm-up runs):\n\n"
        + latency_table([base, *rows], plan.imgsz),
        f"Pruning and finetuning cost per row (every row finetunes {result['finetune_epochs']} epochs in total; "
        f"iterative rows spend part of them between stages):\n\n" + tool_table(rows),
        "Iterative rows, stage by stage:\n\n" + stages_table(iterative) if iterative else "",
        f"Classic slimming (round up {CLASSIC_ROUND_UP}, layer keep {CLASSIC_LAYER_KEEP:g}, no finetuning) of the "
        f"baseline continued {plan.sparse_epochs} epochs with the slim penalty (sr {plan.sr:g}) or without "
        f"(sr 0), mAP50 / mAP50-95:\n\n" + sparse_vs_normal_table(result["sparse_vs_normal"]),
    ] if part)
    meta = {"command": command, "plan": asdict(plan), "machine": machine_info(),
            "wall_seconds_this_invocation": round(wall, 1), "step_seconds": step_seconds,
            "compute_seconds": round(sum(step_seconds.values()), 1),
            "date": time.strftime("%Y-%m-%d"), "best_method": result["best_method"]}
    write_json(out / "methods.json", {**meta, "baseline": base, "rows": rows,
                                      "finetune_epochs": result["finetune_epochs"],
                                      "sparse_vs_normal": result["sparse_vs_normal"]})
    from yoloslim.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(out / "methods.md", (text + "\n").encode())
    plot(rows, {**base, "imgsz": plan.imgsz}, out / "methods.png", title=f"{plan.model_name} on {plan.data_name}")
    return text


def check_inputs(plan: Plan) -> None:
    """Fail in one line before any work on a bad --data or --model, not after the first training."""
    from yoloslim.data.checks import check_data_yaml
    from yoloslim.errors import UserError
    from yoloslim.models.load import resolve_spec

    for flag, check, value in (("--data", check_data_yaml, plan.data), ("--model", resolve_spec, plan.model)):
        if value is not None:
            try:
                check(value)
            except UserError as e:
                raise UserError(f"{flag} {e}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 methods, tiny data and epochs")
    parser.add_argument("--no-variants", dest="variants", action="store_false",
                        help="only the methods, classic slimming and one distillation row (no head-protected, "
                             "iterative or ultralytics distill_model rows)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help=f"subset of: {' '.join(ALL_METHODS)}")
    parser.add_argument("--speed-up", type=float, default=2.0, help="target GFLOPs reduction (default 2.0)")
    parser.add_argument("--out", default="runs/benchmarks/methods", help="cache and report folder")
    parser.add_argument("--model", help="baseline: a model yaml to train (default yolov8n.yaml) or a trained "
                                        "checkpoint to use as is")
    parser.add_argument("--data", help="data.yaml of your dataset (default: synthesize digits); the cache is keyed "
                                       "by this path, so use a new --out if the files behind it change")
    parser.add_argument("--imgsz", type=int, help="override the plan's image size (training, GFLOPs, latency)")
    parser.add_argument("--batch", type=int, help="override the plan's batch size")
    parser.add_argument("--baseline-epochs", type=int, help="override the plan's baseline epochs")
    parser.add_argument("--finetune-share", type=float,
                        help="finetune/distill epochs per row as a share of the baseline's epochs (default 0.5)")
    parser.add_argument("--finetune-epochs", type=int, help="instead of --finetune-share: epochs per row")
    parser.add_argument("--cfg", metavar="YAML", help="ultralytics training settings for every run, from a yaml")
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                        help="ultralytics training settings for every run (baseline, sparse, finetune), e.g. "
                             "mosaic=0.5 cos_lr=True; they join the cache key")
    return parser.parse_args(argv)


PLAN_OWNED = {"epochs": "--baseline-epochs/--finetune-epochs", "imgsz": "--imgsz", "batch": "--batch",
              "data": "--data", "model": "--model", "project": "--out", "name": "--out", "exist_ok": "--out"}


def settings_for_every_run(words: list[str], cfg: str | None) -> tuple[tuple[str, Any], ...] | None:
    """The KEY=VALUE words and --cfg, checked by ultralytics' own checker; None when there are none."""
    from yoloslim.engine.settings import training_settings
    from yoloslim.errors import UserError

    settings = training_settings(words, cfg)
    for key in settings:
        if key in PLAN_OWNED:
            raise UserError(f"{key} is set by the benchmark's {PLAN_OWNED[key]}, not as a setting — use that flag")
    return tuple(sorted(settings.items())) or None


def main(argv: list[str] | None = None) -> int:
    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.errors import UserError

    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    try:
        unknown = sorted(set(args.methods or ()) - set(ALL_METHODS))
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)} — choose from: {' '.join(ALL_METHODS)}")
        if not args.speed_up > 1.0:
            raise UserError(f"--speed-up must be greater than 1.0, got {args.speed_up}")
        if args.methods:
            plan = plan.with_methods(tuple(args.methods))
        options = ("imgsz", "batch", "baseline_epochs", "finetune_epochs")
        overrides = {option: getattr(args, option) for option in options if getattr(args, option) is not None}
        for option, value in overrides.items():
            if value < 1:
                raise UserError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
        if args.finetune_share is not None:
            if not 0.0 < args.finetune_share <= 10.0:
                raise UserError(f"--finetune-share must be in (0, 10], got {args.finetune_share}")
            overrides["finetune_share"] = args.finetune_share
        plan = replace(plan, speed_up=args.speed_up, model=args.model, data=args.data,
                       train_settings=settings_for_every_run(args.settings, args.cfg), **overrides)
        check_inputs(plan)
        out = Path(args.out)
        command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
        started = time.perf_counter()
        bench = Benchmark(plan, out, variants=args.variants)
        result = bench.run()
        steps = {**bench.shared.seconds, **bench.steps.seconds}
        text = report(result, plan, command, time.perf_counter() - started, steps, out.resolve())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{text}\n\nwall time {time.perf_counter() - started:.0f} s (all steps incl. cached ones: "
          f"{sum(steps.values()):.0f} s); report in {out.resolve()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
