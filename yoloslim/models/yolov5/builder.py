"""Turn a YOLOv5 model dict (original schema) into ultralytics' indexed layer list, with ultralytics' blocks.

ultralytics' ``Conv``, ``C3``, ``Bottleneck``, ``SPPF`` and ``Concat`` compute what YOLOv5's blocks compute,
under the same parameter names, with two differences fixed here: ultralytics builds ``SPPF.cv1`` without
an activation (YOLOv5's has SiLU), and BatchNorm must use eps=1e-3, momentum=0.03 (the model class applies
ultralytics' ``initialize_weights``, which sets exactly that). Every layer gets the attributes ultralytics'
forward reads (``f`` sources, ``i`` index) plus ``type`` and ``np``.

The same row loop builds the YOLOv7 family from its own block table (``models/yolov7/builder.py``). Its Conv
rows may name their activation (``nn.LeakyReLU(0.1)`` as the sixth argument, or a model-wide ``activation``
entry); ultralytics' ``Conv`` has dilation in that positional slot, so the activation is passed by keyword.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn
from ultralytics.nn.modules import C3, SPPF, Concat, Conv
from ultralytics.utils.ops import make_divisible

from yoloslim.errors import UserError
from yoloslim.models.yolov5.head import AnchorDetect


@dataclass(frozen=True)
class LayerTable:
    """The blocks a family's yaml rows may name, and which of them take an output width first (scaled by
    ``width_multiple``)."""

    family: str
    blocks: dict[str, type[nn.Module]]
    width_scaled: tuple[type[nn.Module], ...]


YOLOV5_TABLE = LayerTable("yolov5", {
    "Conv": Conv, "C3": C3, "SPPF": SPPF, "Concat": Concat, "nn.Upsample": nn.Upsample, "Detect": AnchorDetect,
}, (Conv, C3, SPPF))
CONV_ACT_SLOT = 5  # Conv rows' args in the original repos: [c2, k, s, p, g, act]; ultralytics has dilation there
ACTIVATION = re.compile(r"^(?:torch\.)?(?:nn\.)?(SiLU|LeakyReLU|ReLU|Hardswish|Mish|Identity)\(([0-9.eE+-]*)\)$")
NAMED_ARGS = ("nc", "anchors")  # bare names in args that stand for the dict's own entries
SUPPORTED_LEVELS = 3  # P3-P5; the loss's per-level objectness balance is defined for three levels


def _argument(value, cfg: dict):
    if isinstance(value, str) and value in NAMED_ARGS:
        return cfg[value]
    return None if value == "None" else value


def parse_activation(spec) -> nn.Module | bool:
    """An activation named in a yaml (``nn.LeakyReLU(0.1)``, ``nn.SiLU()``, or True/False) as a module or flag."""
    if isinstance(spec, bool):
        return spec
    match = ACTIVATION.match(str(spec).replace(" ", ""))
    if match is None:
        raise UserError(f"activation {spec!r} is not supported — use one of nn.SiLU(), nn.LeakyReLU(slope), "
                        f"nn.ReLU(), nn.Hardswish(), nn.Mish(), nn.Identity()")
    name, argument = match.groups()
    return getattr(nn, name)(float(argument)) if argument else getattr(nn, name)()


def _default_activation(cfg: dict, family: str) -> nn.Module | None:
    """The model-wide activation of Conv rows; the yolov5 family only builds SiLU (what its loss was tuned on)."""
    activation = cfg.get("activation")
    if activation is None:
        return None
    module = parse_activation(activation)
    if family == "yolov5" and not isinstance(module, nn.SiLU):
        raise UserError(f"activation {activation!r} is not supported — the yolov5 family uses SiLU (remove the "
                        f"'activation' entry from the model yaml)")
    return module


def _conv_kwargs(args: list, default_act: nn.Module | None) -> tuple[list, dict]:
    """Move a Conv row's activation (positional in the original repos) to ultralytics' ``act=`` keyword."""
    if len(args) > CONV_ACT_SLOT:
        return args[:CONV_ACT_SLOT], {"act": parse_activation(args[CONV_ACT_SLOT])}
    return args, ({"act": default_act} if default_act is not None else {})


def _head_args(args: list, inputs: list[int], widths: list[int]) -> list:
    nc, anchors = args[0], args[1]
    if isinstance(anchors, int):  # a count only (AutoAnchor): placeholder sizes, imported checkpoints overwrite them
        anchors = [list(range(anchors * 2))] * len(inputs)
    if len(anchors) != len(inputs) or len(inputs) != SUPPORTED_LEVELS:
        raise UserError(f"the Detect row has {len(inputs)} inputs and {len(anchors)} anchor levels — the yolov5 "
                        f"family supports {SUPPORTED_LEVELS}-level (P3-P5) models")
    return [nc, anchors, widths]


def build_layers(cfg: dict, ch: int = 3, table: LayerTable = YOLOV5_TABLE) -> tuple[nn.Sequential, list[int]]:
    """(layers, indices of the layers whose outputs later layers read) for a dict from ``config.load_cfg``."""
    blocks, family = table.blocks, table.family
    default_act = _default_activation(cfg, family)
    depth, width = float(cfg["depth_multiple"]), float(cfg["width_multiple"])
    rows = list(cfg["backbone"]) + list(cfg["head"])
    heads = [name for name, block in blocks.items() if issubclass(block, AnchorDetect)]
    if not rows or not isinstance(rows[-1], list) or (rows[-1][2:3] or [None])[0] not in heads:
        raise UserError(f"the model yaml must end with a {' or '.join(heads)} row — it is not a {family} model")
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
        block = blocks.get(name)
        if block is None:
            raise UserError(f"layer {i} uses block {name!r}, which the {family} family does not build — supported: "
                            f"{', '.join(blocks)}")
        inputs = [source] if isinstance(source, int) else list(source)
        args = [_argument(a, cfg) for a in args]
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        kwargs = {}
        if block is Conv:
            args, kwargs = _conv_kwargs(args, default_act)
        if block in table.width_scaled:
            c_out = make_divisible(args[0] * width, 8)
            args = [width_of(source), c_out, *args[1:]]
            if block is C3:
                args.insert(2, repeats)
                repeats = 1
        elif block is Concat:
            c_out = sum(width_of(f) for f in inputs)
        elif issubclass(block, AnchorDetect):
            args = _head_args(args, inputs, [width_of(f) for f in inputs])
            c_out = 0
        else:
            c_out = width_of(source)
        layer = nn.Sequential(*(block(*args, **kwargs) for _ in range(repeats))) if repeats > 1 \
            else block(*args, **kwargs)
        for sppf in (m for m in layer.modules() if isinstance(m, SPPF)):
            sppf.cv1.act = nn.SiLU()
        layer.f, layer.i, layer.type = source, i, name
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(f % i for f in inputs if f != -1)
        layers.append(layer)
        widths.append(c_out)
    return nn.Sequential(*layers), sorted(save)
