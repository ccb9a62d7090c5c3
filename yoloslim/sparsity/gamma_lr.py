"""A learning rate of their own for the penalized BatchNorm scales (γ).

A short sparse run must move the γ the loss does not defend all the way to zero, and with Adam a γ whose
gradient the penalty dominates moves by about one learning rate per step whatever sr is: separation needs
lr × steps of the order of |γ|. Every other weight only has to keep the detector as it was, and each step at
that same lr perturbs it. Giving the penalized γ ``scale`` × the lr of their group lets a run separate them
in the same steps with a gentler lr elsewhere. The group is split off when the optimizer is built, so the
scheduler's warm-up and decay apply to it as to every group, and a resumed run rebuilds the same groups.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from ultralytics.utils.torch_utils import unwrap_model

from yoloslim.errors import UserError

GROUP_NAME = "penalized_bn"


def check_gamma_lr_scale(scale: float | None) -> float | None:
    if scale is not None and not scale > 0:
        raise UserError(f"--gamma-lr-scale must be a positive multiple of lr0 (1 = the same lr), got {scale}")
    return scale


def resumed_gamma_lr_scale(module: nn.Module, requested: float | None) -> float:
    """The scale a resumed run was trained with: its saved optimizer state has the γ group or not, and would not
    load into other groups. Runs recorded before the scale existed had one lr for every weight (1)."""
    from yoloslim.engine.checkpoint import model_meta

    trained = float(model_meta(module).get("sparse", {}).get("gamma_lr_scale", 1.0))
    if requested is not None and requested != trained:
        raise UserError(f"the run was sparse-trained with --gamma-lr-scale {trained:g}, not {requested:g} — resume "
                        f"it without changing --gamma-lr-scale")
    return trained


def split_gamma_group(optimizer: torch.optim.Optimizer, model: nn.Module, gamma_names: Iterable[str],
                      scale: float) -> int:
    """Move the parameters ``gamma_names`` of ``model`` out of their groups into one group at ``scale`` × the lr
    of the group they came from (ultralytics puts every BN weight in one group). Returns how many moved."""
    params = dict(unwrap_model(model).named_parameters())
    wanted = {id(params[name]) for name in gamma_names if name in params}
    moved: list[nn.Parameter] = []
    source: dict | None = None
    for group in optimizer.param_groups:
        taken = [p for p in group["params"] if id(p) in wanted]
        if taken:
            if source is not None and group["lr"] != source["lr"]:
                raise UserError("the penalized γ sit in optimizer groups with different learning rates — "
                                "--gamma-lr-scale cannot scale them as one; leave it at 1")
            source = group
            group["params"] = [p for p in group["params"] if id(p) not in wanted]
            moved.extend(taken)
    if source is not None:
        settings = {k: v for k, v in source.items() if k not in ("params", "initial_lr")}
        optimizer.add_param_group({**settings, "params": moved, "lr": source["lr"] * scale, "param_group": GROUP_NAME})
    return len(moved)
