"""Dataset checks that fail early with one line instead of deep inside the data loader."""

from __future__ import annotations

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
    cfg = yaml.safe_load(Path(data).read_text())
    return len(cfg["names"])
