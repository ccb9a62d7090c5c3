"""Which model specs mean the anchor-based YOLOv5 family, and the model dict they stand for.

Names are ``yolov5{n,s,m,l,x}-anchor.yaml``: scale letters as in ultralytics' names, and a suffix that
ultralytics' own resolver does not touch (it maps ``yolov5n.yaml`` to its anchor-free YOLOv5u). A local
yaml belongs to the family when it has ``anchors`` and ends in a ``Detect`` row, which is true of the
original repo's ``models/yolov5s.yaml`` and false of every ultralytics yaml.

The dict is kept in the original repo's schema (``depth_multiple``/``width_multiple``, ``anchors``,
``backbone``, ``head``) because that is also what original checkpoints carry in their ``yaml``
attribute, so one builder serves our yamls, users' yamls and imported files.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from yoloslim.errors import UserError

FAMILY_YAML = Path(__file__).with_name("yolov5-anchor.yaml")
FAMILY_NAME = re.compile(r"^yolov5([nsmlx])-anchor\.ya?ml$")
SCALE_IN_NAME = re.compile(r"yolov5([nsmlx])")
NAMES = tuple(f"yolov5{s}-anchor.yaml" for s in "nsmlx")


def is_family_name(spec: str | Path) -> bool:
    return bool(FAMILY_NAME.match(Path(str(spec)).name))


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
    return "anchors" in cfg and isinstance(last, list) and len(last) == 4 and last[2] == "Detect"


def is_anchor_cfg(cfg: str | Path | dict | None) -> bool:
    """Whether a model yaml (our name, a local path, or an already loaded dict) is an anchor-based YOLOv5."""
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
        source = path if path.is_file() else FAMILY_YAML if is_family_name(path) else None
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
        raise UserError(f"{name or 'the model yaml'} lacks {', '.join(missing)} — an anchor-based YOLOv5 yaml "
                        f"needs nc, depth_multiple, width_multiple, anchors, backbone and head")
    return d
