"""Dataset checks that fail early with one line instead of deep inside the data loader."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from yoloslim.errors import UserError


def _split_paths(root: Path, entry) -> list[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    return [p if p.is_absolute() else root / p for p in (Path(str(e)) for e in entries)]


def check_data_yaml(data: str | Path, nc: int | None = None) -> Path:
    """Validate a YOLO data.yaml (exists, parses, has train/val/names, paths exist, nc matches).

    Returns the absolute path of the yaml.
    """
    path = Path(data).expanduser()
    if path.is_dir() and (path / "train").is_dir():
        raise UserError(f"{data} is a classify dataset (a folder per class) — a model that predicts boxes needs a "
                        f"data.yaml (`yoloslim synth --task detect` writes one)")
    if path.suffix not in {".yaml", ".yml"}:
        raise UserError(f"--data must be a data.yaml file, got {str(data)!r} — `yoloslim synth` writes one")
    if not path.is_file():
        raise UserError(f"dataset yaml not found: {str(data)!r} — check the path or create one with `yoloslim synth`")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]}) — fix the file") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} does not describe a dataset — it needs train, val and names keys")
    if cfg.get("task") == "classify":
        raise UserError(f"{path} describes a classify dataset (a folder per class) — a model that predicts boxes "
                        f"needs detection-style labels (`yoloslim synth --task detect` writes them)")
    missing = [k for k in ("train", "val", "names") if k not in cfg]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} — a YOLO data.yaml needs train, val and names")
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    for split in ("train", "val"):
        for p in _split_paths(root, cfg[split]):
            if not p.exists():
                raise UserError(f"{path}: {split} path {str(p)!r} does not exist — fix 'path'/'{split}' in the yaml")
    names = cfg["names"]
    n_names = len(names) if isinstance(names, (list, dict)) else 0
    if nc is not None and n_names != nc:
        raise UserError(
            f"the model predicts {nc} classes but {path.name} has {n_names} — use a dataset with {nc} classes "
            f"or a model trained on this one"
        )
    return path.resolve()


def dataset_nc(data: str | Path) -> int:
    """Classes of a checked dataset: a data.yaml's names, or a classify folder's class folders."""
    path = Path(data)
    if path.is_dir():
        return sum(1 for p in (path / "train").iterdir() if p.is_dir())
    return len(yaml.safe_load(path.read_text())["names"])


def dataset_kpt_shape(data: str | Path) -> list[int] | None:
    """A pose dataset's keypoint shape; None for every other dataset."""
    path = Path(data)
    return None if path.is_dir() else (yaml.safe_load(path.read_text()) or {}).get("kpt_shape")


LABEL_SAMPLE = 64  # label files read to tell a dataset's label format
DATASET_USE = {  # the model task -> dataset label formats its loader reads correctly
    "detect": {"detect", "segment", "obb"},  # ultralytics boxes polygons and rotated boxes for a box model
    "segment": {"segment", "obb"},  # a rotated box is a 4-point polygon
    "obb": {"obb"},
    "pose": {"pose"},
    "classify": {"classify"},
}
WRITES = {"detect": "box", "segment": "polygon", "obb": "rotated-box", "pose": "keypoint", "classify": "folder-per-class"}


def check_dataset(data: str | Path, task: str = "detect", nc: int | None = None,
                  kpt_shape: list[int] | None = None) -> Path:
    """What ultralytics takes as ``data`` for a ``task`` model, after checking the dataset fits it.

    Classification reads a folder with a subfolder per class in ``train/`` and ``val/`` (a data.yaml inside
    that folder stands for it); every other task reads a data.yaml whose labels must be in a format the
    task's loader understands, or training would quietly learn from the wrong targets.
    """
    if task == "classify":
        return check_classify_folder(data, nc)
    path = check_data_yaml(data, nc)
    cfg = yaml.safe_load(path.read_text())
    found = label_format(path, cfg)
    if found is not None and found not in DATASET_USE[task]:
        raise UserError(f"the model is {_a(task)} model but {path} is {_a(found)} dataset ({WRITES[found]} labels) — "
                        f"use {_a(task)} dataset (`yoloslim synth --task {task}` writes one) or {_a(found)} model")
    if task == "pose" and kpt_shape is not None and list(cfg.get("kpt_shape") or []) != list(kpt_shape):
        raise UserError(f"the pose model predicts keypoints of shape {list(kpt_shape)} but {path.name} has kpt_shape "
                        f"{cfg.get('kpt_shape')} — use a dataset with {list(kpt_shape)} keypoints")
    return path


def _a(task: str) -> str:
    return f"an {task}" if task[0] in "aeiou" else f"a {task}"


def check_classify_folder(data: str | Path, nc: int | None = None) -> Path:
    """A classify dataset folder (or the data.yaml inside one) as ultralytics reads it: train/<class>/, val/<class>/."""
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"dataset not found: {str(data)!r} — a classify dataset is a folder with train/ and val/ "
                        f"holding one subfolder per class (`yoloslim synth --task classify` writes one)")
    folder = path if path.is_dir() else path.parent
    if not (folder / "train").is_dir():
        kind = label_format(path, yaml.safe_load(path.read_text()) or {}) if path.suffix in {".yaml", ".yml"} else None
        what = f"{_a(kind)} dataset ({WRITES[kind]} labels)" if kind else "not a classify dataset"
        raise UserError(f"the model is a classify model but {data} is {what} — use a folder with train/ and val/ "
                        f"holding one subfolder per class (`yoloslim synth --task classify` writes one)")
    if not any((folder / split).is_dir() for split in ("val", "validation", "valid", "test")):
        raise UserError(f"{folder} has no val/ folder — a classify dataset needs train/ and val/, one subfolder per class")
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if nc is not None and len(classes) != nc:
        raise UserError(f"the model predicts {nc} classes but {folder} has {len(classes)} class folders — use a "
                        f"dataset with {nc} classes or a model trained on this one")
    return folder.resolve()


def label_format(path: Path, cfg: dict) -> str | None:
    """Which task's labels a dataset holds: the format most of its sampled train label lines have.

    pose: the yaml has kpt_shape; detect: 5 numbers a line; obb: 9 (class and four corners); segment: longer
    polygons. None when no label line was found (an unlabelled or list-file dataset is not judged).
    """
    if cfg.get("task") == "classify":
        return "classify"
    if cfg.get("kpt_shape") is not None:
        return "pose"
    counts: dict[str, int] = {}
    for line in _sample_label_lines(path, cfg):
        n = len(line.split())
        kind = "detect" if n == 5 else "obb" if n == 9 else "segment" if n >= 7 and n % 2 == 1 else None
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return None
    if counts.get("segment"):  # a polygon dataset may hold some 4-point polygons, and boxes in segment sets are rare
        return "segment"
    return max(counts, key=counts.__getitem__)


def _sample_label_lines(path: Path, cfg: dict) -> list[str]:
    """Lines of the first label files of the train split, found where ultralytics looks (images/ -> labels/)."""
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    images_part, labels_part = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    files: list[Path] = []
    for images in _split_paths(root, cfg["train"]):
        text = str(images) + os.sep
        if images.is_dir() and images_part in text:
            label_dir = Path(labels_part.join(text.rsplit(images_part, 1)))
            files.extend(sorted(label_dir.glob("*.txt"))[:LABEL_SAMPLE])
    return [line for file in files[:LABEL_SAMPLE] for line in file.read_text().splitlines() if line.strip()]
