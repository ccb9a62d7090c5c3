"""``sparse_train()``: train with a sparsity penalty on BN γ so that channels become prunable.

The model is first made prunable (:func:`yoloslim.prune.graph.prepare_for_pruning` rewrites
split blocks in place), then trained as it is, so the run's checkpoints feed ``prune`` directly.
Which BNs are penalized is derived from the dependency graph (:mod:`yoloslim.sparsity.selection`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

from torch import nn

from yoloslim.errors import UserError
from yoloslim.sparsity.defaults import SPARSE_DEFAULTS

Callback = tuple[str, Callable[[Any], None]]
TRACE_IMGSZ = 64  # channel dependencies do not depend on resolution; tracing small is fast


def check_sr(sr: float) -> float:
    if not math.isfinite(sr) or sr < 0:
        raise UserError(f"--sr must be a non-negative number (e.g. 1e-2; 0 trains without penalty), got {sr}")
    return float(sr)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine for m in model.modules())


def build_module(spec: str | nn.Module, data: str | Path) -> tuple[nn.Module, Path]:
    """The module to train — a checkpoint as it is, or a yaml built for the dataset's classes (and keypoints) —
    and the checked dataset path for its task."""
    from yoloslim.data.checks import check_dataset, dataset_kpt_shape, dataset_nc
    from yoloslim.engine.tasks import check_data_for, task_of
    from yoloslim.models.load import build_from_yaml, load_module, resolve_spec

    if isinstance(spec, nn.Module):
        module = spec
    else:
        target, is_checkpoint = resolve_spec(str(spec))
        if is_checkpoint:
            module = load_module(target)
        else:
            checked = check_dataset(data, task=task_of(target))
            module = build_from_yaml(target, nc=dataset_nc(checked), kpt_shape=dataset_kpt_shape(checked))
    return module, check_data_for(module, data)


def sparse_train(
    model: str | nn.Module,
    data: str | Path | None,
    sr: float = SPARSE_DEFAULTS.sr,
    method: str = SPARSE_DEFAULTS.method,
    schedule: str = SPARSE_DEFAULTS.schedule,
    penalize_coupled: bool = False,
    clip: float | None = None,
    gamma_lr_scale: float | None = None,
    epochs: int | None = None,
    imgsz: int | None = None,
    project: str | Path | None = None,
    name: str = "sparse",
    resume: str | bool = False,
    callbacks: Iterable[Callback] = (),
    measure_cut: bool = True,
    **overrides: Any,
):
    """Sparse-train ``model`` (yaml, checkpoint or module) and return the run's ``TrainResult``.

    ``clip`` is the gradient-clipping max norm (None: no clipping, the default for sparse
    training, since clipping would also shrink the penalty). ``gamma_lr_scale`` gives the penalized γ that multiple
    of the lr (:mod:`yoloslim.sparsity.gamma_lr`; None: the default, or a resumed run's own). ``overrides`` go to
    ultralytics (batch, device, workers, seed, amp, ...); optimizer, lr0 and nbs default to
    :data:`~yoloslim.sparsity.defaults.SPARSE_DEFAULTS` (nbs = batch), other settings to ultralytics'.
    ``resume`` continues from a run's last.pt (its dataset too when ``data`` is None), penalty state
    included. ``callbacks`` are extra ``(event, fn)`` pairs. ``measure_cut`` ends the run by measuring the safe
    classic-slimming ratio of last.pt and best.pt on training batches and recording it in them.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import LOGGER

    from yoloslim.engine.checkpoint import read_checkpoint, record_meta
    from yoloslim.engine.train import recorded_data, run_dir, train
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.callback import SparseTraining
    from yoloslim.sparsity.gamma_lr import check_gamma_lr_scale, resumed_gamma_lr_scale
    from yoloslim.sparsity.penalties import check_method, make_penalty
    from yoloslim.sparsity.schedule import check_schedule
    from yoloslim.sparsity.selection import select_bns
    from yoloslim.sparsity.verdict import shortcut_for

    check_sr(sr)
    check_method(method)
    check_schedule(schedule)
    check_gamma_lr_scale(gamma_lr_scale)
    if clip is not None and not clip > 0:
        raise UserError(f"--clip must be a positive max gradient norm, got {clip}")
    resuming = bool(resume) and resume is not True
    dataset = data if data is not None else recorded_data(read_checkpoint(resume)) if resuming else None
    if dataset is None:
        raise UserError("--data is required — pass a YOLO data.yaml (`yoloslim synth` writes one)")
    module, data_yaml = build_module(resume if resuming else model, dataset)
    if resuming:
        gamma_lr_scale = resumed_gamma_lr_scale(module, gamma_lr_scale)
    elif gamma_lr_scale is None:
        gamma_lr_scale = SPARSE_DEFAULTS.gamma_lr_scale
    if not has_batchnorm(module):
        raise UserError("the model has no BatchNorm layers, so there is no γ to make sparse — "
                        "use a model with BN (e.g. yolov8n.yaml) or prune it without sparse training")
    prunable = prepare_for_pruning(module, imgsz=TRACE_IMGSZ)
    selection = select_bns(module, build_dependency_graph(prunable), prunable.ignored_layers, penalize_coupled)
    LOGGER.info(f"yoloslim sparse ({method}, sr={sr:g}, {schedule}): {selection.describe()}")
    penalty = make_penalty(method, selection)
    record_meta(module, sparse={"method": method, "sr": sr, "schedule": schedule,
                                "epochs": epochs or DEFAULT_CFG_DICT["epochs"],
                                "penalize_coupled": penalize_coupled, "gamma_lr_scale": gamma_lr_scale,
                                "penalized": list(selection.penalized)})
    extension = SparseTraining(penalty, sr=sr, schedule=schedule, clip=clip, shortcut=shortcut_for(penalize_coupled),
                               gamma_lr_scale=gamma_lr_scale)
    if not resuming:  # a resumed run keeps its own settings
        batch = overrides.get("batch", DEFAULT_CFG_DICT["batch"])
        overrides = {**SPARSE_DEFAULTS.trainer_settings(batch), **overrides}
    result = train(module, data_yaml if data is not None else None, epochs=epochs, imgsz=imgsz,
                   project=run_dir(project, "sparse"), name=name, callbacks=[*callbacks, *extension.events()],
                   resume=resume, **overrides)
    if measure_cut:
        measure_run(result, data_yaml, LOGGER.info)
    return result


def measure_run(result, data_yaml: Path, log: Callable[[str], None]) -> None:
    """Measure the safe ratio of the run's last and best checkpoints and record it in them
    (:mod:`yoloslim.sparsity.measured_cut`)."""
    from yoloslim.sparsity.measured_cut import measure_checkpoint

    for path in dict.fromkeys((result.last, result.best)):
        if Path(path).is_file():
            cut = measure_checkpoint(path, data_yaml, log)
            if cut is not None:
                log(f"{path}: measured safe ratio {cut.ratio:g} (the cut at {cut.breaking_ratio} raised the "
                    f"{cut.breaking_task} by more than {cut.bound:.0%})" if cut.breaking_ratio else
                    f"{path}: measured safe ratio {cut.ratio:g}")
