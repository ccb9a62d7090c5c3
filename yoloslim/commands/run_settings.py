"""What a training command (train, sparse, finetune, distill) runs with, and what its resume runs with.

Three sources, strongest first: what the user typed (flags and ``key=value`` words), a ``--cfg`` yaml, and
the flags' defaults. A word for a key that has a flag (``epochs=5``) sets that flag. When the run resumes
(``--resume last.pt``), the defaults are replaced by the run itself: its training settings come from last.pt
(ultralytics' ``train_args``) and yoloslim's own settings (``--sr``, ``--teacher``, ...) from the record this
module saves in last.pt (:class:`RunRecord`); only what the user typed overrides them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from yoloslim.engine.settings import check_settings, parse_words, read_cfg
from yoloslim.engine.trainer import SAVE_TRAINING_STATE, TRAINING_STATE_KEY
from yoloslim.errors import UserError

# ultralytics keys that have a flag of their own, with that flag's argparse destination
FLAG_FOR_KEY = {
    "epochs": "epochs", "imgsz": "imgsz", "batch": "batch", "device": "device", "workers": "workers",
    "seed": "seed", "optimizer": "optimizer", "lr0": "lr0", "amp": "amp", "plots": "plots",
    "project": "project", "name": "name", "data": "data", "model": "weights", "resume": "resume", "nbs": "nbs",
}
TRAINER_FLAGS = ("epochs", "imgsz", "batch", "device", "workers", "seed", "amp", "plots", "optimizer", "lr0", "nbs")
# destinations that are not yoloslim settings of the run (the run's inputs, ultralytics' settings, CLI plumbing)
NOT_RECORDED = frozenset({"weights", "data", "resume", "settings", "cfg", "trust_checkpoint", "command", "project",
                          "name", *TRAINER_FLAGS})
RECORD = "run"  # key in last.pt's training state


class RunRecord:
    """A training callback that saves the command and its yoloslim settings in last.pt, for ``--resume`` alone."""

    def __init__(self, command: str, settings: dict[str, Any]) -> None:
        self.command = command
        self.settings = settings

    def __call__(self, trainer) -> None:
        trainer.training_state[RECORD] = {"command": self.command, "settings": dict(self.settings)}

    def callbacks(self) -> list[tuple[str, Any]]:
        return [(SAVE_TRAINING_STATE, self)]


@dataclass
class RunSettings:
    overrides: dict[str, Any]  # ultralytics settings for the trainer (when resuming: only the typed ones)
    resume: str | None
    record: RunRecord


def _typed(args: argparse.Namespace) -> set[str]:
    """Destinations the user typed (set by the CLI); called from Python without it, every non-None one counts."""
    typed = getattr(args, "_typed", None)
    return set(typed) if typed is not None else {k for k, v in vars(args).items() if v is not None}


def _set_flag(args: argparse.Namespace, dest: str, value: Any) -> None:
    """Set a flag from a word or the cfg file, held to the same choices as the flag."""
    from yoloslim.commands.common import OPTIMIZERS

    if dest == "optimizer" and value not in OPTIMIZERS:
        raise UserError(f"optimizer={value!r} is not an ultralytics optimizer — choose one of "
                        f"{', '.join(OPTIMIZERS)}")
    setattr(args, dest, value)


def _flag_for(args: argparse.Namespace, key: str) -> str | None:
    """The destination of the flag that sets ``key`` in this command (only some commands have --nbs)."""
    dest = FLAG_FOR_KEY.get(key)
    return dest if dest is not None and hasattr(args, dest) else None


def _apply_settings(args: argparse.Namespace, typed: set[str]) -> dict[str, Any]:
    """Fold ``--cfg`` and the words into ``args``; return the settings that have no flag of their own."""
    from_cfg = check_settings(read_cfg(args.cfg), f"--cfg {args.cfg}") if args.cfg else {}
    words = check_settings(parse_words(args.settings or ()), "settings")
    extra: dict[str, Any] = {}
    typed_flags = set(typed)
    for key, value in from_cfg.items():
        dest = _flag_for(args, key)
        if dest is None:
            extra[key] = value
        elif dest not in typed:
            _set_flag(args, dest, value)
            typed.add(dest)
    for key, value in words.items():
        dest = _flag_for(args, key)
        if dest is None:
            extra[key] = value
            continue
        if dest in typed_flags and getattr(args, dest) != value:
            raise UserError(f"{key} is given twice ({getattr(args, dest)!r} by its flag and {key}={value!r}) — "
                            f"keep one")
        _set_flag(args, dest, value)
        typed.add(dest)
    return extra


def _recorded_run(path: str, command: str) -> dict[str, Any]:
    """The yoloslim settings a run saved in its last.pt (empty for a run without a record)."""
    from ultralytics.utils import LOGGER

    from yoloslim.engine.checkpoint import read_checkpoint

    record = (read_checkpoint(path).get(TRAINING_STATE_KEY) or {}).get(RECORD)
    if not record:
        LOGGER.warning(f"{path} holds no record of yoloslim settings (written by an older yoloslim or by "
                       f"ultralytics): settings you do not type take their defaults")
        return {}
    if record["command"] != command:
        raise UserError(f"{path} is a `yoloslim {record['command']}` run — resume it with "
                        f"`yoloslim {record['command']} --resume {path}`")
    return dict(record["settings"])


def resolve_run(args: argparse.Namespace, command: str) -> RunSettings:
    """Settle ``args`` for a training command (see the module docstring); raises one-line errors before any work."""
    typed = _typed(args)
    extra = _apply_settings(args, typed)
    if args.resume:
        from yoloslim.errors import require_file

        require_file(str(args.resume), "--resume checkpoint")
        for dest, value in _recorded_run(str(args.resume), command).items():
            if dest not in typed and hasattr(args, dest):
                setattr(args, dest, value)
        trainer = {k: getattr(args, k) for k in TRAINER_FLAGS if k in typed}
    else:
        if not args.weights:
            raise UserError(f"{command} needs --weights/--model (a checkpoint or a model yaml), or --resume LAST_PT")
        trainer = {k: getattr(args, k) for k in TRAINER_FLAGS if getattr(args, k, None) is not None}
    settings = {k: v for k, v in vars(args).items() if k not in NOT_RECORDED and not k.startswith("_")}
    return RunSettings(overrides={**trainer, **extra}, resume=args.resume, record=RunRecord(command, settings))
