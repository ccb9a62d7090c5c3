"""Gradients of the detection loss on a few real batches, for the data-driven importances.

Taylor and Hessian importances read ``param.grad``. The planner prunes many throw-away copies of
the model (``deepcopy`` drops ``.grad``), so the statistics are computed once, kept by parameter
name, and put back on each copy with :func:`attach_gradients`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.methods import GradientStat


def calibration_batches(data: str | Path, imgsz: int, batch: int, stride: int, task: str = "detect"):
    """Un-augmented training batches in ultralytics' batch-dict format for the ``task`` (letterboxed images
    with boxes, masks, keypoints or angles; centre-cropped images and classes for classify). Pass the images
    through :func:`model_input` before a forward pass."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_cls_dataset, check_det_dataset

    cfg = get_cfg(overrides={"imgsz": imgsz, "cache": False, "fraction": 1.0, "task": task})
    if task == "classify":
        from ultralytics.data.dataset import ClassificationDataset

        dataset = ClassificationDataset(str(check_cls_dataset(str(data))["train"]), args=cfg, augment=False)
    else:
        info = check_det_dataset(str(data))
        dataset = build_yolo_dataset(cfg, info["train"], batch, info, mode="val", stride=stride)
    return build_dataloader(dataset, batch=batch, workers=0, shuffle=False, pin_memory=False, device="cpu")


def model_input(images: torch.Tensor) -> torch.Tensor:
    """A loader's images as the model takes them: YOLO loaders give uint8 pixels, classify loaders floats."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def gradient_statistics(model: nn.Module, data: str | Path, stat: GradientStat, batches: int, imgsz: int,
                        batch: int = 4, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Mean gradient (``stat="mean"``) or mean squared gradient (``"squared"``) of the detection loss
    over ``batches`` batches, keyed by parameter name, on the CPU.

    The squared statistic is the empirical Fisher, taken per batch: a cheap stand-in for the Hessian
    diagonal that needs one backward pass per batch instead of one per image.
    """
    from ultralytics.utils.torch_utils import select_device

    if batches < 1:
        raise UserError(f"--calib-batches must be at least 1, got {batches}")
    from yoloslim.engine.tasks import task_of

    loader = calibration_batches(data, imgsz, batch, loader_stride(model), task_of(model))
    saved_mode = model.training
    saved_requires = {name: p.requires_grad for name, p in model.named_parameters()}
    device = select_device(device, verbose=False)
    model.to(device).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()  # gradients only: the running statistics of the model being pruned must not move
    totals: dict[str, torch.Tensor] = {}
    seen = 0
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        with loss_ready(model):
            for seen, images in enumerate(loader, start=1):
                model.zero_grad(set_to_none=True)
                images = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in images.items()}
                images["img"] = model_input(images["img"])
                loss, _ = model.loss(images)
                loss.sum().backward()
                for name, p in model.named_parameters():
                    if p.grad is not None:
                        g = p.grad.detach().float().cpu()
                        g = g * g if stat == "squared" else g
                        totals[name] = totals[name] + g if name in totals else g
                if seen == batches:
                    break
    finally:
        model.zero_grad(set_to_none=True)
        model.cpu().train(saved_mode)
        for name, p in model.named_parameters():
            p.requires_grad_(saved_requires[name])
    if not totals:
        raise UserError(f"no calibration images found in the train split of {data} — check the dataset")
    return {name: g / seen for name, g in totals.items()}


def loader_stride(model: nn.Module) -> int:
    """The letterbox stride of the calibration loader: the model's largest stride, at least 32."""
    return max(int(getattr(model, "stride", torch.tensor([32])).max()), 32)


@contextmanager
def loss_ready(model: nn.Module) -> Iterator[nn.Module]:
    """``model.loss(batch)`` works inside: loss gains on ``model.args``, a fresh criterion and, for RT-DETR's
    loss, ``model.nc``. All is put back on exit, so the pruned checkpoint carries what the input carried."""
    from yoloslim.engine.trainer import head_nc

    saved_args = getattr(model, "args", None)
    model.args = _loss_hyperparameters(saved_args)
    model.criterion = None
    lends_nc = not hasattr(model, "nc")  # trainers set it; RT-DETR's loss reads it
    if lends_nc:
        model.nc = head_nc(model)
    try:
        yield model
    finally:
        model.criterion = None
        model.args = saved_args
        if lends_nc:
            del model.nc


def _loss_hyperparameters(model_args):
    """ultralytics' losses read their gains as attributes of ``model.args``; a model built from a yaml
    carries a plain dict (or nothing), so give it the defaults overlaid with its own gains."""
    from ultralytics.cfg import get_cfg

    own = model_args if isinstance(model_args, dict) else vars(model_args) if model_args is not None else {}
    hyp = get_cfg()
    for key in ("box", "cls", "dfl"):
        if key in own:
            setattr(hyp, key, own[key])
    return hyp


def attach_gradients(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Put the statistics on ``model`` as ``.grad``; parameters the loss never reached get zeros."""
    for name, p in model.named_parameters():
        p.grad = grads[name].clone() if name in grads else torch.zeros_like(p)
