"""Turn a YOLOv5 model dict (original schema) into ultralytics' indexed layer list, with ultralytics' blocks.

ultralytics' ``Conv``, ``C3``, ``Bottleneck``, ``SPPF`` and ``Concat`` compute what YOLOv5's blocks compute,
under the same parameter names, with two differences fixed here: ultralytics builds ``SPPF.cv1`` without
an activation (YOLOv5's has SiLU), and BatchNorm must use eps=1e-3, momentum=0.03 (the model class applies
ultralytics' ``initialize_weights``, which sets exactly that). Every layer gets the attributes ultralytics'
forward reads (``f`` sources, ``i`` index) plus ``type`` and ``np``.
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.modules import C3, SPPF, Concat, Conv
from ultralytics.utils.ops import make_divisible

from yoloslim.errors import UserError
from yoloslim.models.yolov5.head import AnchorDetect

BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": Conv, "C3": C3, "SPPF": SPPF, "Concat": Concat, "nn.Upsample": nn.Upsample, "Detect": AnchorDetect,
}
WIDTH_SCALED = (Conv, C3, SPPF)  # first argument is an output width, scaled by width_multiple
NAMED_ARGS = ("nc", "anchors")  # bare names in args that stand for the dict's own entries
SUPPORTED_LEVELS = 3  # P3-P5; the loss's per-level objectness balance is defined for three levels


def _argument(value, cfg: dict):
    if isinstance(value, str) and value in NAMED_ARGS:
        return cfg[value]
    return None if value == "None" else value


def _check_activation(cfg: dict) -> None:
    activation = cfg.get("activation")
    if activation is not None and str(activation).replace(" ", "") not in {"nn.SiLU()", "torch.nn.SiLU()"}:
        raise UserError(f"activation {activation!r} is not supported — the yolov5 family uses SiLU (remove the "
                        f"'activation' entry from the model yaml)")


def _head_args(args: list, inputs: list[int], widths: list[int]) -> list:
    nc, anchors = args[0], args[1]
    if isinstance(anchors, int):  # a count only (AutoAnchor): placeholder sizes, imported checkpoints overwrite them
        anchors = [list(range(anchors * 2))] * len(inputs)
    if len(anchors) != len(inputs) or len(inputs) != SUPPORTED_LEVELS:
        raise UserError(f"the Detect row has {len(inputs)} inputs and {len(anchors)} anchor levels — the yolov5 "
                        f"family supports {SUPPORTED_LEVELS}-level (P3-P5) models")
    return [nc, anchors, widths]


def build_layers(cfg: dict, ch: int = 3) -> tuple[nn.Sequential, list[int]]:
    """(layers, indices of the layers whose outputs later layers read) for a dict from ``config.load_cfg``."""
    _check_activation(cfg)
    depth, width = float(cfg["depth_multiple"]), float(cfg["width_multiple"])
    rows = list(cfg["backbone"]) + list(cfg["head"])
    if not rows or not isinstance(rows[-1], list) or rows[-1][2:3] != ["Detect"]:
        raise UserError("the model yaml must end with a Detect row — it is not an anchor-based YOLOv5")
    widths: list[int] = []  # output channels of the layers built so far
    layers, save = [], []

    def width_of(source: int) -> int:
        return widths[source] if widths else ch  # the first layer reads the image

    for i, row in enumerate(rows):
        try:
            source, repeats, name, args = row
        except (TypeError, ValueError):
            raise UserError(f"layer {i} of the model yaml is {row!r} — rows are [from, repeats, block, args]"
                            ) from None
        block = BLOCKS.get(name)
        if block is None:
            raise UserError(f"layer {i} uses block {name!r}, which the yolov5 family does not build — supported: "
                            f"{', '.join(BLOCKS)}")
        inputs = [source] if isinstance(source, int) else list(source)
        args = [_argument(a, cfg) for a in args]
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if block in WIDTH_SCALED:
            c_out = make_divisible(args[0] * width, 8)
            args = [width_of(source), c_out, *args[1:]]
            if block is C3:
                args.insert(2, repeats)
                repeats = 1
        elif block is Concat:
            c_out = sum(width_of(f) for f in inputs)
        elif block is AnchorDetect:
            args = _head_args(args, inputs, [width_of(f) for f in inputs])
            c_out = 0
        else:
            c_out = width_of(source)
        layer = nn.Sequential(*(block(*args) for _ in range(repeats))) if repeats > 1 else block(*args)
        for sppf in (m for m in layer.modules() if isinstance(m, SPPF)):
            sppf.cv1.act = nn.SiLU()
        layer.f, layer.i, layer.type = source, i, name
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(f % i for f in inputs if f != -1)
        layers.append(layer)
        widths.append(c_out)
    return nn.Sequential(*layers), sorted(save)
