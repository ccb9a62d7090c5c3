"""Sizes of yoloslim's anchor-based YOLOv5 and YOLOv7 models next to the original repos' published ones.

    python benchmarks/anchor_sizes.py [--nc 80] [--imgsz 640]

Builds ``yolov5{n,s,m,l,x}-anchor.yaml`` and ``yolov7-tiny.yaml``/``yolov7.yaml``/``yolov7x.yaml`` with random
weights and prints a markdown table of parameters and GFLOPs at ``--imgsz`` (ultralytics' thop count), each
before and after fusing (BatchNorm into the convs; for YOLOv7 also RepConv's branches and IDetect's implicit
tensors — the reference figures are of fused, reparameterized models).
"""

from __future__ import annotations

import argparse

REFERENCE = {  # the original repos at 640 px, 80 classes: (params in millions, GFLOPs)
    "yolov5n-anchor.yaml": (1.9, 4.5), "yolov5s-anchor.yaml": (7.2, 16.5), "yolov5m-anchor.yaml": (21.2, 49.0),
    "yolov5l-anchor.yaml": (46.5, 109.1), "yolov5x-anchor.yaml": (86.7, 205.7),  # YOLOv5 README
    "yolov7-tiny.yaml": (6.2, 13.8), "yolov7.yaml": (36.9, 104.7), "yolov7x.yaml": (71.3, 189.9),  # YOLOv7 paper
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.models.anchor_specs import build_anchor_model
    from yoloslim.report.metrics import count_params, gflops

    print(f"| model | params | params fused | GFLOPs at {args.imgsz} | fused | reference params | reference GFLOPs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (ref_params, ref_gflops) in REFERENCE.items():
        model = build_anchor_model(name, nc=args.nc, verbose=False).eval()
        params, cost = count_params(model), gflops(model, args.imgsz)
        fused = model.fuse(verbose=False)
        print(f"| {name.removesuffix('.yaml')} | {params:,} | {count_params(fused):,} | {cost:.2f} | "
              f"{gflops(fused, args.imgsz):.2f} | {ref_params} M | {ref_gflops} |", flush=True)


if __name__ == "__main__":
    main()
