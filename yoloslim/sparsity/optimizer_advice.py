"""Why --sr barely matters under adaptive optimizers: they cap how far the penalty moves a γ.

Adam-family optimizers divide every parameter's step by its running gradient scale. Where the
penalty dominates a γ's gradient the step is about lr whatever --sr, so over a run no γ moves more
than about lr × optimizer steps (less, since the lr decays); γ whose loss gradient is larger and
noisier take smaller normalized steps and stay up. Undefended channels therefore cluster together
below the rest instead of reaching zero, which still ranks them last for a global |γ| cut (the
methods benchmark measured this working better than SGD at 8 epochs). Under SGD the penalty's
step is lr × sr, so --sr sets the pace. ultralytics' ``optimizer=auto`` picks AdamW for runs
under 10k iterations, so users should know which regime they are in.
"""

from __future__ import annotations

import torch

ADAPTIVE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax,
            torch.optim.Adagrad, torch.optim.RMSprop)


def adaptive_drift_cap(optimizer: torch.optim.Optimizer, steps: float) -> float | None:
    """About the farthest any γ can move in ``steps`` under an adaptive optimizer; None for SGD-like ones."""
    if not isinstance(optimizer, ADAPTIVE):
        return None
    lr = max(group.get("initial_lr", group["lr"]) for group in optimizer.param_groups)
    return lr * steps


def sparse_optimizer_warning(trainer) -> str | None:
    """One line for the log when the trainer's optimizer caps the penalty's reach, else None."""
    accumulate = max(int(getattr(trainer, "accumulate", 1) or 1), 1)
    steps = trainer.epochs * len(trainer.train_loader) / accumulate
    cap = adaptive_drift_cap(trainer.optimizer, steps)
    if cap is None:
        return None
    name = type(trainer.optimizer).__name__
    return (f"sparse training with {name}: its per-parameter step is about lr whatever --sr, so no BN γ can "
            f"shrink by more than ~{cap:.2g} in this run ({steps:.0f} steps) and --sr changes little; unimportant "
            f"γ end up clustered below the rest rather than at zero (a global |γ| cut still finds them); "
            f"pass --optimizer SGD (optimizer='SGD') if you want --sr to set how far they go")
