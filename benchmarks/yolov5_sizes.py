"""Sizes of yoloslim's anchor-based YOLOv5 models next to the original repo's published ones.

    python benchmarks/yolov5_sizes.py [--nc 80] [--imgsz 640]

Builds ``yolov5{n,s,m,l,x}-anchor.yaml`` with random weights and prints a markdown table of parameters
and GFLOPs at ``--imgsz`` (ultralytics' thop count), each before and after fusing BatchNorm into the convs
(the reference figures are of fused models).
"""

from __future__ import annotations

import argparse

REFERENCE = {  # the original repo's README at 640 px, 80 classes: (params in millions, GFLOPs)
    "n": (1.9, 4.5), "s": (7.2, 16.5), "m": (21.2, 49.0), "l": (46.5, 109.1), "x": (86.7, 205.7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    import yoloslim  # noqa: F401  (offline setup before ultralytics)
    from yoloslim.models.yolov5.model import YOLOv5DetectionModel
    from yoloslim.report.metrics import count_params, gflops

    print(f"| model | params | params fused | GFLOPs at {args.imgsz} | fused | reference params | reference GFLOPs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for scale, (ref_params, ref_gflops) in REFERENCE.items():
        model = YOLOv5DetectionModel(f"yolov5{scale}-anchor.yaml", nc=args.nc, verbose=False).eval()
        params, cost = count_params(model), gflops(model, args.imgsz)
        fused = model.fuse(verbose=False)
        print(f"| yolov5{scale}-anchor | {params:,} | {count_params(fused):,} | {cost:.2f} | "
              f"{gflops(fused, args.imgsz):.2f} | {ref_params} M | {ref_gflops} |")


if __name__ == "__main__":
    main()
