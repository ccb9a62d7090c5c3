"""Re-estimate BatchNorm statistics after pruning, without touching a weight.

Removing channels changes what every following layer sees, so the running mean and variance its
BatchNorm learned on the unpruned model no longer describe its input; the pruned model then
collapses before any finetuning. Running a few training batches through the model with every
BatchNorm in training mode and momentum ``None`` (an exact average over the batches seen) puts
statistics back that match the pruned network. No gradient is computed and no parameter changes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from yoloslim.errors import UserError

DEFAULT_RECALIB_BATCHES = 16


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate_bn(model: nn.Module, data: str | Path, batches: int = DEFAULT_RECALIB_BATCHES, imgsz: int = 640,
                   batch: int = 16, device: str = "cpu", progress: bool = True) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches`` training batches.

    Images are letterboxed training images without augmentation (the same loader as the calibration
    gradients). Returns the number of images used; the model is left in eval mode on the CPU.
    """
    from ultralytics.utils.torch_utils import select_device

    from yoloslim.engine.checkpoint import record_meta
    from yoloslim.engine.tasks import task_of
    from yoloslim.prune.calibration import calibration_batches, model_input

    if batches < 1:
        raise UserError(f"--recalib must be at least 1 batch (or 0 to skip recalibration), got {batches}")
    norms = batch_norms(model)
    if not norms:
        return 0
    stride = max(int(getattr(model, "stride", torch.tensor([32])).max()), 32)
    loader = calibration_batches(data, imgsz, batch, stride, task_of(model))
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    target = select_device(device, verbose=False)
    model.to(target).eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    images = 0
    try:
        with torch.no_grad():
            for seen, images_batch in enumerate(tqdm(loader, total=min(batches, len(loader)), disable=not progress,
                                                     desc="BN recalibration", leave=False), start=1):
                model(model_input(images_batch["img"].to(target)))
                images += len(images_batch["img"])
                if seen == batches:
                    break
    except BaseException:
        _restore(norms, saved)
        raise
    finally:
        for norm, (momentum, *_) in zip(norms, saved):
            norm.momentum = momentum
        model.cpu().eval()
    if not images:
        _restore(norms, saved)
        raise UserError(f"no images found in the train split of {data} to recalibrate BatchNorm — check the dataset")
    record_meta(model, recalibrated={"batches": min(batches, len(loader)), "images": images})
    return images


def _restore(norms: list[nn.modules.batchnorm._BatchNorm], saved: list[tuple]) -> None:
    """Put the statistics from before a failed recalibration back."""
    for norm, (_, mean, var, tracked) in zip(norms, saved):
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.num_batches_tracked.copy_(tracked)
