"""What a teacher costs per training iteration: time and peak memory, with vs without distillation.

Modes: plain training, yoloslim distillation (--logit/--feature), and ultralytics' built-in
``DistillationModel`` (its ``distill_model`` option: score-weighted feature L2) for comparison.
An iteration is forward + loss + backward + optimizer step of the same student on a fixed random
batch with random boxes, so only the teacher's share differs between modes.

Time: the three modes take turns iteration by iteration in one process, so load from other
processes hits them alike; medians are reported, and the overhead is the median of the paired
differences with the neighbouring plain iteration. On CPU the clock is process CPU time (run with
OMP_NUM_THREADS=1), on CUDA synchronised wall time. Memory: each mode runs alone in a fresh
process; CUDA peak allocated, or peak RSS on CPU.

    OMP_NUM_THREADS=1 python benchmarks/distill_overhead.py --student yolov8n.yaml --teacher yolov8s.yaml
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import yoloslim  # noqa: F401  (offline setup before ultralytics)

MODES = {"plain": "plain training", "distill": "yoloslim distillation", "ultralytics": "ultralytics distill_model"}


def random_batch(batch: int, imgsz: int, nc: int, device) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    per_image = 3
    xy = torch.rand(batch * per_image, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(batch * per_image, 2, generator=g) * 0.3 + 0.1
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(per_image).float().to(device),
        "cls": torch.randint(0, nc, (batch * per_image, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
    }


def build(spec: str, nc: int, device):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.models import load_module

    model = load_module(spec) if spec.endswith(".pt") else DetectionModel(spec, nc=nc, verbose=False)
    model.args = get_cfg()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(device)


def training_steps(args: argparse.Namespace, modes) -> dict:
    """One step function per mode, all training the same student; each returns its duration in seconds."""
    import torch

    from yoloslim.distill.config import DistillConfig
    from yoloslim.distill.criterion import build_distillation

    torch.manual_seed(0)
    device = torch.device(args.device)
    student = build(args.student, args.nc, device)
    student.criterion = plain_criterion = student.init_criterion()
    batch = random_batch(args.batch, args.imgsz, args.nc, device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    loss_fns, params = {"plain": student.loss}, list(student.parameters())
    if "distill" in modes:
        teacher = build(args.teacher, args.nc, device)
        criterion = build_distillation(
            student, teacher, DistillConfig(teacher=teacher, logit=args.logit, feature=args.feature), args.imgsz, device
        )
        loss_fns["distill"] = criterion
        params += list(criterion.trainable_parameters())
    if "ultralytics" in modes:
        from ultralytics.nn.distill_model import DistillationModel

        student.args.imgsz = args.imgsz
        wrapper = DistillationModel(teacher_model=build(args.teacher, args.nc, device), student_model=student)
        loss_fns["ultralytics"] = wrapper.loss
        params += list(wrapper.projector.parameters())
        wrapper.train()
    student.train()
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step(mode: str) -> float:
        start = clock()
        if mode == "distill":
            loss, _ = loss_fns["distill"](student(batch["img"]), batch)
        else:
            student.criterion = plain_criterion
            loss, _ = loss_fns[mode](batch)
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    return {mode: (lambda m=mode: step(m)) for mode in modes}


def interleaved_times(args: argparse.Namespace) -> dict[str, list[float]]:
    steps = training_steps(args, list(MODES))
    times = {mode: [] for mode in MODES}
    for i in range(args.warmup + args.iters):
        for mode, step in steps.items():
            seconds = step()
            if i >= args.warmup:
                times[mode].append(1000 * seconds)
    return times


def peak_memory(args: argparse.Namespace) -> float:
    """Peak MB of a process that ran only ``args.mode``."""
    import torch

    step = training_steps(args, ["plain", args.mode] if args.mode != "plain" else ["plain"])[args.mode]
    for _ in range(args.warmup + 2):
        step()
    if args.device != "cpu":
        return torch.cuda.max_memory_allocated(torch.device(args.device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="yolov8n.yaml", help="student yaml or .pt")
    p.add_argument("--teacher", default="yolov8s.yaml", help="teacher yaml or .pt")
    p.add_argument("--nc", type=int, default=10, help="classes when building from yaml")
    p.add_argument("--logit", default="l2", help="logit loss (l1/l2/ast), 'none' to disable")
    p.add_argument("--feature", default="cwd", help="feature loss (mimic/mgd/cwd), 'none' to disable")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per mode")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.logit = None if args.logit == "none" else args.logit
    args.feature = None if args.feature == "none" else args.feature
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.mode:
        print(json.dumps({"peak_mb": peak_memory(args)}))
        return
    memory = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, *argv, "--mode", mode], check=True, capture_output=True, text=True)
        memory[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    times = interleaved_times(args)
    plain_ms, plain_mb = statistics.median(times["plain"]), memory["plain"]
    terms = "+".join(t for t in (args.logit, args.feature) if t)
    peak = "CUDA peak allocated" if args.device != "cpu" else "peak RSS"
    print(f"student {args.student}, teacher {args.teacher}, yoloslim terms {terms}, imgsz {args.imgsz}, "
          f"batch {args.batch}, {args.device}, {args.iters} interleaved iterations per mode\n")
    print(f"| mode | ms / iteration (median) | time overhead (paired) | {peak} MB | memory overhead |")
    print("|---|---:|---:|---:|---:|")
    for mode, label in MODES.items():
        ms = statistics.median(times[mode])
        paired = statistics.median(t - p for t, p in zip(times[mode], times["plain"]))
        mb = memory[mode]
        print(f"| {label} | {ms:.0f} | {paired:+.0f} ms ({100 * paired / plain_ms:+.0f}%) | {mb:.0f} | "
              f"{mb - plain_mb:+.0f} MB ({100 * (mb - plain_mb) / plain_mb:+.0f}%) |")


if __name__ == "__main__":
    main()
