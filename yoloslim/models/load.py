"""Resolve ``--model``/``--weights`` to an ultralytics model of the right family.

A spec is either a model yaml that ultralytics ships (``yolov8n.yaml``, ``rtdetr-l.yaml``), one of
yoloslim's anchor-based YOLOv5/YOLOv7 yamls (``yolov5n-anchor.yaml``, ``yolov7-tiny.yaml``), or a local
yaml/checkpoint path. Checkpoints are used as they are — never rebuilt from their yaml — so a pruned
model keeps its pruned shape; checkpoints written by the original YOLOv5/YOLOv7 repos are imported.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from yoloslim.errors import UserError
from yoloslim.models.anchor_specs import build_anchor_model, is_anchor_cfg, is_family_name

RTDETR_MARKERS = ("rtdetr",)


def _ultralytics_knows(name: str) -> bool:
    """Ask ultralytics' own yaml resolver (it maps ``yolov8n.yaml`` to ``yolov8.yaml`` at scale n)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(name)
    except (FileNotFoundError, OSError):
        return False
    return True


def is_rtdetr_module(module: nn.Module) -> bool:
    from ultralytics.nn.tasks import RTDETRDetectionModel

    return isinstance(module, RTDETRDetectionModel)


def _model_class(is_rtdetr: bool):
    from ultralytics import RTDETR, YOLO

    return RTDETR if is_rtdetr else YOLO


def resolve_spec(spec: str) -> tuple[str, bool]:
    """Return (path-or-name for ultralytics, is_checkpoint) or fail with one line."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise UserError(f"checkpoint not found: {spec!r} — check the path (yoloslim never downloads weights)")
        return str(path.resolve()), True
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return str(path.resolve()), False
        if is_family_name(path.name) or _ultralytics_knows(path.name):
            return path.name, False
        sample = ", ".join(("yolov8n.yaml", "yolo11n.yaml", "yolov5nu.yaml", "yolov5n-anchor.yaml", "yolov7-tiny.yaml",
                           "rtdetr-l.yaml"))
        raise UserError(f"unknown model yaml {spec!r} — use a local yaml file or one that ultralytics ships, e.g. {sample}")
    raise UserError(f"cannot load {spec!r} — pass a checkpoint (.pt) or a model yaml (.yaml)")


def check_builds_offline(target: str) -> None:
    """Refuse a yaml whose layers would download weights while being built: ultralytics' ``TorchVision`` layer
    asks torchvision for pretrained weights (``DEFAULT`` in ``yolo11-cls-resnet18.yaml``), which fetches them
    unless torch's hub cache already holds the file."""
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(target)
    for row in [*(cfg.get("backbone") or []), *(cfg.get("head") or [])]:
        args = list(row[3]) if len(row) > 3 else []
        if str(row[2]) != "TorchVision" or len(args) < 3 or not _literal(args[2]):
            continue
        cached = _torchvision_weights_file(str(args[1]), str(args[2]))
        if cached is None or not cached.is_file():
            where = f"put {cached.name} in {cached.parent}" if cached else "put them in torch's hub cache"
            raise UserError(f"{Path(target).name} builds torchvision's {args[1]} with its pretrained {args[2]} "
                            f"weights, a download, and yoloslim never downloads — {where}, or copy the yaml with "
                            f"weights None for random ones")


def _literal(value):
    """A yaml argument as ultralytics' model parser reads it: the string ``None`` is None."""
    import ast

    try:
        return ast.literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError):
        return value


def _torchvision_weights_file(model: str, weights: str) -> Path | None:
    """Where torchvision keeps ``model``'s ``weights`` once downloaded (None when torchvision does not know them)."""
    import torch
    import torchvision

    try:
        url = torchvision.models.get_model_weights(model)[weights].url
    except (KeyError, ValueError, AttributeError):
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def build_from_yaml(target: str, nc: int | None = None, verbose: bool = False,
                    kpt_shape: list[int] | None = None) -> nn.Module:
    """A new module of the yaml's task from a resolved model yaml, with ``nc`` classes (and a pose
    model's ``kpt_shape``) if given."""
    if is_anchor_cfg(target):
        return build_anchor_model(target, nc=nc, verbose=verbose)
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from yoloslim.engine.tasks import task_spec

    if any(m in Path(target).name.lower() for m in RTDETR_MARKERS):
        return RTDETRDetectionModel(target, nc=nc, verbose=verbose)
    cls = task_spec(target).model_builder()
    check_builds_offline(target)
    extra = {"data_kpt_shape": tuple(kpt_shape)} if kpt_shape is not None and cls.__name__ == "PoseModel" else {}
    return cls(target, nc=nc, verbose=verbose, **extra)


def load_model(spec: str, verbose: bool = False):
    """An ultralytics ``YOLO``/``RTDETR`` object for a yaml name or a local path.

    A checkpoint is first read with the allowlisting unpickler, so ultralytics' own (unrestricted) load
    that follows only ever sees a file that holds nothing but allowed names.
    """
    target, is_ckpt = resolve_spec(spec)
    if is_ckpt:
        from yoloslim.engine.checkpoint import checkpoint_module, is_imported, read_checkpoint

        ckpt = read_checkpoint(target)
        if is_imported(ckpt):
            raise UserError(f"{spec} was written by the original YOLOv5/YOLOv7 repo, which ultralytics' YOLO cannot "
                            f"load — convert it once with `yoloslim import --weights {spec} --out model.pt`")
        rtdetr = is_rtdetr_module(checkpoint_module(ckpt))
    elif is_anchor_cfg(target):
        from yoloslim.models.yolov5.wrapper import AnchorYOLOv5

        return AnchorYOLOv5(target, verbose=verbose)
    else:
        from yoloslim.engine.tasks import task_of

        rtdetr = any(m in Path(target).name.lower() for m in RTDETR_MARKERS)
        task_of(target)  # a task yoloslim does not handle is refused before ultralytics builds it
        check_builds_offline(target)
    try:
        return _model_class(rtdetr)(target) if rtdetr else _model_class(rtdetr)(target, verbose=verbose)
    except (FileNotFoundError, KeyError) as e:
        raise UserError(f"ultralytics could not build {spec!r}: {e} — check the yaml") from None


def module_from_checkpoint(ckpt: dict) -> nn.Module:
    """The checkpoint's fp32 model in eval mode, with the attributes ultralytics' loader gives a loaded model
    (``args`` merged over its defaults, ``task``, a ``stride``), without reading the file a second time."""
    import torch
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import guess_model_task

    from yoloslim.engine.checkpoint import checkpoint_module

    module = checkpoint_module(ckpt)
    saved = module.args if isinstance(getattr(module, "args", None), dict) else {}
    module.args = {**DEFAULT_CFG_DICT, **saved, **(ckpt.get("train_args") or {})}
    module.task = getattr(module, "task", None) or guess_model_task(module)
    if not hasattr(module, "stride"):
        module.stride = torch.tensor([32.0])
    return module.eval()


def load_module(spec: str | nn.Module) -> nn.Module:
    """The bare detection ``nn.Module`` (fp32, eval) behind a spec; checkpoints are read once, safely."""
    if isinstance(spec, nn.Module):
        return spec
    target, is_ckpt = resolve_spec(spec)
    if is_ckpt:
        from yoloslim.engine.checkpoint import read_checkpoint

        return module_from_checkpoint(read_checkpoint(target))
    return load_model(spec).model.float().eval()
