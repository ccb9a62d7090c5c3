"""Which model specs mean one of yoloslim's anchor-based families, and the model dict they stand for.

Two families: the original YOLOv5 (``yolov5{n,s,m,l,x}-anchor.yaml``, scale letters as in ultralytics' names
and a suffix its resolver does not touch, since it maps ``yolov5n.yaml`` to its anchor-free YOLOv5u) and the
original YOLOv7 (``yolov7-tiny.yaml``, ``yolov7.yaml``, ``yolov7x.yaml``, names ultralytics does not ship). A
local yaml belongs to a family when it has ``anchors`` and ends in a ``Detect``/``IDetect`` row, which is
true of the original repos' yamls and false of every ultralytics yaml; it is a YOLOv7 when a row names a
block only YOLOv7 has.

The dict is kept in the original repos' schema (``depth_multiple``/``width_multiple``, ``anchors``,
``backbone``, ``head``) because that is also what original checkpoints carry in their ``yaml``
attribute, so one builder serves our yamls, users' yamls and imported files.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from yoloslim.errors import UserError

HERE = Path(__file__).parent
YOLOV5_NAME = re.compile(r"^yolov5([nsmlx])-anchor\.ya?ml$")
YOLOV7_NAME = re.compile(r"^(yolov7-tiny|yolov7|yolov7x)\.ya?ml$")
SCALE_IN_NAME = re.compile(r"yolov5([nsmlx])")
NAMES = (*(f"yolov5{s}-anchor.yaml" for s in "nsmlx"), "yolov7-tiny.yaml", "yolov7.yaml", "yolov7x.yaml")
HEAD_BLOCKS = ("Detect", "IDetect")
ONLY_IN_YOLOV7 = ("MP", "SP", "SPPCSPC", "RepConv", "IDetect")  # a yaml naming any of these is a YOLOv7


def is_family_name(spec: str | Path) -> bool:
    name = Path(str(spec)).name
    return bool(YOLOV5_NAME.match(name) or YOLOV7_NAME.match(name))


def _family_yaml(name: str) -> Path | None:
    """The yaml file behind one of our family names."""
    if YOLOV5_NAME.match(name):
        return HERE / "yolov5" / "yolov5-anchor.yaml"
    match = YOLOV7_NAME.match(name)
    return HERE / "yolov7" / f"{match.group(1)}.yaml" if match else None


def _read_yaml(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read model yaml {path}: {str(e).splitlines()[0]} — fix the file") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} is not a model yaml (expected a mapping with backbone and head)")
    return cfg


def _describes_anchor_model(cfg: dict) -> bool:
    head = cfg.get("head")
    last = head[-1] if isinstance(head, list) and head else None
    return "anchors" in cfg and isinstance(last, list) and len(last) == 4 and last[2] in HEAD_BLOCKS


def family_of(cfg: dict) -> str:
    """"yolov7" or "yolov5" for a dict that ``is_anchor_cfg`` accepts."""
    rows = [*cfg.get("backbone", ()), *cfg.get("head", ())]
    return "yolov7" if any(isinstance(r, list) and r[2:3] and r[2] in ONLY_IN_YOLOV7 for r in rows) else "yolov5"


def anchor_model_class(cfg: dict) -> type:
    """The model class that builds an anchor-based dict (imported here, so that spec checks stay light)."""
    if family_of(cfg) == "yolov7":
        from yoloslim.models.yolov7.model import YOLOv7DetectionModel

        return YOLOv7DetectionModel
    from yoloslim.models.yolov5.model import YOLOv5DetectionModel

    return YOLOv5DetectionModel


def build_anchor_model(cfg: str | Path | dict, **kwargs):
    """The anchor-based model a yaml name, path or dict describes, of the family it belongs to."""
    resolved = load_cfg(cfg)  # read once: the model class takes the resolved dict
    return anchor_model_class(resolved)(resolved, **kwargs)


def is_anchor_cfg(cfg: str | Path | dict | None) -> bool:
    """Whether a model yaml (our name, a local path, or an already loaded dict) is an anchor-based YOLOv5/v7."""
    if isinstance(cfg, dict):
        return _describes_anchor_model(cfg)
    if cfg is None:
        return False
    path = Path(str(cfg)).expanduser()
    if path.suffix not in {".yaml", ".yml"}:
        return False
    if path.is_file():
        try:
            return _describes_anchor_model(_read_yaml(path))
        except UserError:
            return False
    return is_family_name(path)


def load_cfg(cfg: str | Path | dict) -> dict:
    """The model dict in the original schema, with ``depth_multiple``/``width_multiple`` resolved from the scale."""
    if isinstance(cfg, dict):
        d = copy.deepcopy(cfg)
        name = str(d.get("yaml_file", ""))
    else:
        path = Path(str(cfg)).expanduser()
        source = path if path.is_file() else _family_yaml(path.name)
        if source is None:
            raise UserError(f"model yaml not found: {str(cfg)!r} — use one of {', '.join(NAMES)} or a local file")
        d = _read_yaml(source)
        d["yaml_file"] = name = path.name
    if "scales" in d:
        in_name = SCALE_IN_NAME.search(Path(name).stem)
        scale = d.get("scale") or (in_name.group(1) if in_name else None)
        if scale not in d["scales"]:
            raise UserError(f"{name or 'the model yaml'} has scales {', '.join(d['scales'])} but names none of them "
                            f"— use a name such as yolov5n-anchor.yaml")
        d["depth_multiple"], d["width_multiple"] = d.pop("scales")[scale][:2]
        d["scale"] = scale
    missing = [k for k in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head") if k not in d]
    if missing:
        raise UserError(f"{name or 'the model yaml'} lacks {', '.join(missing)} — an anchor-based YOLOv5/v7 yaml "
                        f"needs nc, depth_multiple, width_multiple, anchors, backbone and head")
    return d
