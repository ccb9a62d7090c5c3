"""Any ultralytics training setting, given the way the ``yolo`` CLI takes them: ``key=value`` words and a yaml file.

Keys and values are checked with ultralytics' own checkers (``check_dict_alignment`` for the key, ``check_cfg``
for its type and range) before any work starts, and every problem becomes one line: a misspelled key is named
with the nearest valid one, a wrong type with the form the key takes.
Used by the training commands and by ``benchmarks/methods.py`` (:func:`training_settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from yoloslim.engine.quiet import ultralytics_warnings_only
from yoloslim.errors import UserError, require_file

# Keys that describe the run rather than the training; yoloslim sets them from its own flags.
RESERVED = {"mode": "the command", "task": "the model", "save_dir": "--project and --name", "cfg": "--cfg"}
STATED_BY_DEFAULT = {"mode": "train", "task": "detect", "resume": False}


def parse_words(words: Sequence[str]) -> dict[str, Any]:
    """``["mosaic=0", "cos_lr=True"]`` → ``{"mosaic": 0, "cos_lr": True}``, values typed as ultralytics types them."""
    from ultralytics.cfg import merge_equals_args, parse_key_value_pair

    try:
        merged = merge_equals_args(list(words))
    except SyntaxError as e:
        raise UserError(f"settings: {e}") from None
    settings: dict[str, Any] = {}
    for word in merged:
        key = word.split("=", 1)[0].strip()
        if "=" not in word or not key:
            raise UserError(f"{word!r} is not a setting — give ultralytics settings as KEY=VALUE words after the "
                            f"flags, e.g. mosaic=0 cos_lr=True")
        try:
            key, value = parse_key_value_pair(word)
        except AssertionError:
            raise UserError(f"setting {key!r} has no value — write {key}=VALUE") from None
        if key in settings:
            raise UserError(f"setting {key!r} is given twice — keep one {key}=VALUE")
        settings[key] = value
    return settings


def read_cfg(path: str | Path) -> dict[str, Any]:
    """The settings in a ``--cfg`` yaml (a mapping of ultralytics keys to values)."""
    require_file(str(path), "--cfg file")
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise UserError(f"--cfg {path} is not valid YAML ({str(e).splitlines()[0]}) — fix the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise UserError(f"--cfg {path} must be a mapping of ultralytics settings, e.g. 'mosaic: 0.5'")
    # a copy of ultralytics' default.yaml states what a training run is anyway: those entries set nothing
    return {k: v for k, v in loaded.items()
            if v is not None and not (k in STATED_BY_DEFAULT and STATED_BY_DEFAULT[k] == v)}


def check_settings(settings: dict[str, Any], source: str) -> dict[str, Any]:
    """Check every key and value with ultralytics' checkers; one line naming the first problem, else the settings."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg, check_dict_alignment

    for key in settings:
        if key in RESERVED:
            raise UserError(f"{source}: {key!r} is set by {RESERVED[key]}, not as a training setting — remove it")
    try:
        with ultralytics_warnings_only():  # its key checker prints the whole CLI help before raising
            check_dict_alignment(DEFAULT_CFG_DICT, dict(settings))
    except SyntaxError as e:
        reasons = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise UserError(f"{source}: {reasons} (`yolo cfg` lists every setting)") from None
    checked = dict(settings)
    try:
        check_cfg(checked, hard=True)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {str(e).splitlines()[0]}") from None
    return checked


def training_settings(words: Sequence[str] = (), cfg: str | Path | None = None) -> dict[str, Any]:
    """The ultralytics settings of a ``--cfg`` file and ``key=value`` words (words win), checked.

    Raises :class:`~yoloslim.errors.UserError` on the first bad key or value; call it before any work.
    """
    from_cfg = check_settings(read_cfg(cfg), f"--cfg {cfg}") if cfg else {}
    return {**from_cfg, **check_settings(parse_words(words), "settings")}
