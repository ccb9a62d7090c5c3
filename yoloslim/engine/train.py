"""``train()``: one function behind train, sparse, finetune and distill."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from torch import nn

from yoloslim.data.checks import check_data_yaml
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint
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
    data: str | Path,
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    device: str = "cpu",
    project: str | Path | None = None,
    name: str = "train",
    callbacks: Iterable[Callback] = (),
    resume: bool | str = False,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` (yaml name, checkpoint path, or in-memory module) on a YOLO dataset.

    A checkpoint or module is trained as it is — its architecture is never rebuilt — so the
    same call finetunes a pruned model. ``callbacks`` are ``(event, fn)`` pairs.
    """
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    resume_path = _resume_checkpoint(resume)
    data_yaml = check_data_yaml(data)
    if not resume_path and isinstance(model, (str, Path)) and str(model).endswith(".pt"):
        # read once: the module both picks the trainer class and is what trains
        model, spec = checkpoint_module(read_checkpoint(model)), str(model)
    else:
        spec = model if isinstance(model, (str, Path)) else "module.pt"
    args = {
        "model": resume_path or spec,
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": device,
        "project": run_dir(project, "train"),
        "name": name,
        "exist_ok": False,
        "resume": resume_path or False,
        **overrides,
    }
    if resume_path:  # the run's own folder and settings come from its checkpoint
        for key in ("project", "name", "exist_ok"):
            args.pop(key)
    cls = trainer_class(resume_path or model)
    trainer = cls(overrides={k: str(v) if isinstance(v, Path) else v for k, v in args.items()})
    for event, fn in callbacks:
        trainer.add_callback(event, fn)
    if isinstance(model, nn.Module) and not resume_path:
        trainer.model = model
    trainer.train()
    return TrainResult(
        save_dir=Path(trainer.save_dir),
        best=Path(trainer.best),
        last=Path(trainer.last),
        metrics={k: float(v) for k, v in (trainer.metrics or {}).items()},
    )


def _resume_checkpoint(resume: bool | str) -> str | None:
    if not resume:
        return None
    if resume is True:
        raise UserError("--resume needs the path of the run's weights/last.pt")
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"cannot resume: {resume!r} does not exist — pass the run's weights/last.pt")
    from yoloslim.models.yolov5.importer import is_original_checkpoint

    if is_original_checkpoint(path):
        raise UserError(f"cannot resume {resume!r}: it was written by the original YOLOv5 repo, whose training state "
                        f"does not carry over — train from it instead (--model {resume})")
    return str(path.resolve())
