"""Export a checkpoint to ONNX with ultralytics' exporter, then check it in ONNX Runtime against PyTorch."""

from __future__ import annotations

import argparse

from yoloslim.commands.common import add_model_arg

NAME = "export"
HELP = "export to ONNX and check it against PyTorch"
ORDER = 70


def configure(p: argparse.ArgumentParser) -> None:
    from yoloslim.engine.export import FORMATS

    add_model_arg(p)
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format")
    p.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    p.add_argument("--out", default=None, help="output file (default: next to the checkpoint)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: ultralytics' choice)")


def run(args: argparse.Namespace) -> int:
    from yoloslim.engine.export import export_onnx
    from yoloslim.errors import UserError

    if not str(args.weights).endswith(".pt"):
        raise UserError("export needs a trained checkpoint (.pt), not a yaml")
    result = export_onnx(args.weights, imgsz=args.imgsz, out=args.out, opset=args.opset)
    print(f"exported: {result.path}")
    print(f"max abs difference ONNX Runtime vs PyTorch: {result.max_abs_diff:.2e} "
          f"(outputs up to {result.output_scale:.3g} in magnitude)")
    return 0
