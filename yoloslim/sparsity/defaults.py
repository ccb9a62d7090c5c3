"""What ``yoloslim sparse`` and ``sparse_train()`` train with when the user does not say: one place, with why.

* **nbs = batch** (step the optimizer every batch). ultralytics accumulates gradients up to its nominal batch
  ``nbs`` 64, i.e. 64/batch batches per optimizer step (8 at batch 8). A sparse run is short, so it then makes
  few steps and γ barely move; the penalty acts once per optimizer step, so every batch should be one.
* **AdamW at lr 0.002**: measured against ultralytics' ``auto`` (AdamW at 0.002·5/(4+classes), 0.000714 for
  10 classes), AdamW at 0.001 and SGD at 0.01, with nbs = batch and 64, at sr 1e-3/1e-2/3e-2, 8 epochs from the
  digits benchmark's trained yolov8n (``benchmarks/sparse_defaults.py``, docs/BENCHMARKS.md): only AdamW at
  0.002 with a step every batch allowed a classic cut past 0.5 (measured safe ratio 0.75-0.82); ``auto`` and SGD
  allowed none (their cuts at 0.5 lost 0.17-0.52 mAP50-95), AdamW at 0.001 at most 0.27.
* **sr 1e-2, linear schedule** (sr falls to 10% of itself by the end, the seeds' decay): the largest measured
  safe ratio of the three at 8 epochs (0.82, 2.00x fewer GFLOPs; 0.80 at 3e-2, 0.75 and 1.80x at 1e-3, which
  lost 0.009 less mAP50-95 at its cut).

``benchmarks/sparse_defaults.py`` measures these against the alternatives; :data:`SPARSE_DEFAULTS` is where
its winner is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SparseDefaults:
    sr: float = 1e-2
    schedule: str = "linear"
    method: str = "slim"
    optimizer: str = "AdamW"
    lr0: float | None = 0.002  # None: ultralytics' (with optimizer auto, fitted to the class count)
    nbs: int | None = None  # None: the batch size, so the optimizer steps every batch
    gamma_lr_scale: float = 1.0  # the penalized γ's lr as a multiple of lr0
    optimizer_reason: str = ("Measured from the digits benchmark's yolov8n (docs/BENCHMARKS.md): after 8 epochs only AdamW "
                             "at lr 0.002 stepping every batch allowed a classic cut past 0.5 (measured safe ratio "
                             "0.75-0.82); ultralytics' 'auto' (AdamW at a lower lr) and SGD at 0.01 allowed none, at sr "
                             "1e-3 to 3e-2. Give it about a quarter of the baseline's epochs: at 25% the cut at the "
                             "safe ratio (0.83, 2.0x fewer GFLOPs) lost nothing against the baseline, at 10% it lost "
                             "0.023 mAP50-95.")

    def trainer_settings(self, batch: Any) -> dict[str, Any]:
        """The ultralytics settings these defaults stand for at ``batch`` (an auto batch size, -1 or a memory
        fraction, is unknown until training starts: ultralytics' nbs then stays)."""
        settings: dict[str, Any] = {"optimizer": self.optimizer}
        if self.nbs or (isinstance(batch, int) and batch >= 1):
            settings["nbs"] = self.nbs or batch
        return settings if self.lr0 is None else {**settings, "lr0": self.lr0}

    def describe(self) -> str:
        """The --help paragraph: the defaults and why."""
        lr = f"lr0 {self.lr0:g}" if self.lr0 is not None else "the lr it picks"
        nbs = f"--nbs {self.nbs}" if self.nbs else "--nbs = --batch"
        return (f"Defaults (yoloslim/sparsity/defaults.py): --optimizer {self.optimizer} ({lr}), {nbs}, --sr "
                f"{self.sr:g} with a {self.schedule} schedule, --method {self.method}. The optimizer steps every "
                f"batch because ultralytics' default nbs 64 accumulates 64/batch batches per step, so a short sparse "
                f"run would make few steps and γ would barely move. {self.optimizer_reason} The run ends by measuring, on "
                f"last.pt and best.pt, the largest classic --prune-ratio (with --round-up 8) whose cut keeps every "
                f"task loss within +5% on a few training batches, records it in them, and prints one line with it.")


SPARSE_DEFAULTS = SparseDefaults()  # benchmarks/sparse_defaults.py's winner
