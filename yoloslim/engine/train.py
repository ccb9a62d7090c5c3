"""``train()``: one function behind train, sparse, finetune and distill."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from torch import nn

from yoloslim.data.checks import check_dataset
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
from yoloslim.engine.device import resolve_device
from yoloslim.engine.tasks import check_data_for, task_of
from yoloslim.engine.trainer import trainer_class
from yoloslim.errors import UserError

Callback = tuple[str, Callable[[Any], None]]


@dataclass
class TrainResult:
    save_dir: Path
    best: Path
    last: Path
    metrics: dict[str, float]


def run_dir(project: str | Path | None, default: str) -> str:
    """Runs go under ./runs/<default> unless the user names a project folder."""
    return str(Path(project or Path("runs") / default).expanduser().resolve())


def train(
    model: str | nn.Module,
    data: str | Path | None = None,
    epochs: int | None = None,
    imgsz: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    project: str | Path | None = None,
    name: str = "train",
    callbacks: Iterable[Callback] = (),
    resume: bool | str = False,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` (yaml name, checkpoint path, or in-memory module) on a YOLO dataset.

    A checkpoint or module is trained as it is — its architecture is never rebuilt — so the
    same call finetunes a pruned model. ``callbacks`` are ``(event, fn)`` pairs. Settings left at
    None take ultralytics' defaults (``device``: the first GPU if any, else the CPU).
    ``resume`` (a run's last.pt) continues that run with its own settings, dataset included; only the
    settings passed here override them, and only those a resumed run can change.
    Every check runs before the run folder is made, and a run that fails before its first epoch ends
    leaves no folder behind.
    """
    given = {k: v for k, v in dict(epochs=epochs, imgsz=imgsz, batch=batch, device=device).items() if v is not None}
    if given.get("epochs", 1) < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    resume_path, resume_ckpt = _resume_checkpoint(resume)
    module, spec = _model_to_train(model, resume_ckpt)
    data_given = data is not None
    if not data_given and resume_ckpt is not None:
        data = recorded_data(resume_ckpt)
    if data is None:
        raise UserError("--data is required — pass a YOLO data.yaml (`yoloslim synth` writes one)")
    data_yaml = check_data_for(module, data) if module is not None else check_dataset(data, task=task_of(spec))
    if resume_path:  # the run's own folder and settings come from its checkpoint
        args = {"model": resume_path, "resume": resume_path, **given, **overrides}
        if data_given:
            args["data"] = str(data_yaml)
    else:
        args = {"model": spec, "data": str(data_yaml), **given, "device": resolve_device(device),
                "project": run_dir(project, "train"), "name": name, "exist_ok": False, "resume": False, **overrides}
    cls = trainer_class(module if module is not None else model)
    fresh_dir = None if resume_path else _new_run_dir(args)
    try:
        trainer = cls(overrides={k: str(v) if isinstance(v, Path) else v for k, v in args.items()})
        for event, fn in callbacks:
            trainer.add_callback(event, fn)
        if module is not None and not resume_path:
            trainer.model = module
        trainer.train()
    except BaseException:
        if fresh_dir is not None:
            _remove_if_untrained(fresh_dir)
        raise
    return TrainResult(
        save_dir=Path(trainer.save_dir),
        best=Path(trainer.best),
        last=Path(trainer.last),
        metrics={k: float(v) for k, v in (trainer.metrics or {}).items()},
    )


def _model_to_train(model: str | Path | nn.Module, resume_ckpt: dict | None) -> tuple[nn.Module | None, str]:
    """The module to train (read once) and the name the run records; None for a yaml to build."""
    if resume_ckpt is not None:
        return checkpoint_module(resume_ckpt), ""
    if isinstance(model, nn.Module):
        return model, "module.pt"
    if str(model).endswith(".pt"):
        return checkpoint_module(read_checkpoint(model)), str(model)
    return None, str(model)


def recorded_data(ckpt: dict) -> str | None:
    """The dataset a checkpoint was trained on (a data.yaml, or a classifier's folder), when it says and it still
    exists."""
    recorded = (ckpt.get("train_args") or {}).get("data")
    return str(recorded) if recorded and Path(str(recorded)).exists() else None


def data_from_checkpoint(weights: str | Path | None, command: str) -> str:
    """``--data`` when it was left out: the dataset the checkpoint was trained on, said in one line."""
    from ultralytics.utils import LOGGER

    if weights is None or not str(weights).endswith(".pt"):
        raise UserError(f"{command} needs --data DATA_YAML (a YOLO data.yaml; `yoloslim synth` writes one)")
    data = recorded_data(read_checkpoint(weights))
    if data is None:
        raise UserError(f"{command} needs --data: {weights} records no dataset that still exists — pass the "
                        f"data.yaml (or a classifier's dataset folder) to use")
    LOGGER.info(f"{command}: no --data given, using {data} (the dataset {Path(str(weights)).name} was trained on)")
    return data


def _new_run_dir(args: dict[str, Any]) -> Path | None:
    """The folder ultralytics is about to create for a new run, or None when it exists already."""
    from ultralytics.utils.files import increment_path

    folder = increment_path(Path(args["project"]) / str(args["name"]), exist_ok=bool(args.get("exist_ok")))
    return None if folder.exists() else folder


def _remove_if_untrained(folder: Path) -> None:
    """Remove a run folder that holds nothing trained yet (args.yaml, an empty weights/, label plots)."""
    if folder.is_dir() and not (folder / "results.csv").exists() and not any(folder.rglob("*.pt")):
        shutil.rmtree(folder, ignore_errors=True)


def _resume_checkpoint(resume: bool | str) -> tuple[str | None, dict | None]:
    """The absolute path of the last.pt to resume and its contents (read once here)."""
    if not resume:
        return None, None
    if resume is True:
        raise UserError("--resume needs the path of the run's weights/last.pt")
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"cannot resume: {resume!r} does not exist — pass the run's weights/last.pt")
    from yoloslim.engine.checkpoint import is_imported

    ckpt = read_checkpoint(path)
    if is_imported(ckpt):
        raise UserError(f"cannot resume {resume!r}: it was written by the original YOLOv5 repo, whose training state "
                        f"does not carry over — train from it instead (--model {resume})")
    return str(path.resolve()), ckpt
