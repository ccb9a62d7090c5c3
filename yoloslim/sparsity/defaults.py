"""What ``yoloslim sparse`` and ``sparse_train()`` train with when the user does not say: one place, with why.

* **nbs = batch** (step the optimizer every batch). ultralytics accumulates gradients up to its nominal batch
  ``nbs`` 64, i.e. 64/batch batches per optimizer step (8 at batch 8). A sparse run is short, so it then makes
  few steps and γ barely move; the penalty acts once per optimizer step, so every batch should be one.
* **AdamW at lr 0.001, the penalized γ at 6 x that (0.006)**: with Adam a γ the penalty dominates moves about
  one lr per step whatever sr is, so a short run separates γ only with a large lr for them, while every other
  weight only has to keep the detector and is best left a gentle lr (:mod:`yoloslim.sparsity.gamma_lr`).
  Measured at 8 epochs (10% of the baseline's) from the digits benchmark's and the shapes data's trained
  yolov8n, three seeds each (``benchmarks/sparse_defaults.py``, docs/BENCHMARKS.md): classic slimming at the
  measured safe ratio lost at most 0.004 mAP50-95 on digits (safe ratio 0.83-0.84, 2.0x fewer GFLOPs) and 0.008
  on shapes (0.72-0.76, 1.7-1.8x), and the |γ| histogram opened a gap of 3.7-3.9x and 2.0x. The earlier default,
  one lr 0.002 for every weight, lost at most 0.007 on digits but allowed only 0.10-0.15 on shapes; γ at 4 x 0.002
  lost up to 0.043 on digits; lr 0.001 with γ at 4x allowed 0.47-0.69 on shapes. ultralytics' ``auto``
  optimizer (AdamW at 0.000714 for 10 classes) and SGD at 0.01 allowed no cut past 0.5 at all.
* **sr 1e-2, linear schedule** (sr falls to 10% of itself by the end, the seeds' decay): the largest measured
  safe ratio of 1e-3/1e-2/3e-2 in the first grid (0.82 against 0.80 and 0.75).

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
    lr0: float | None = 0.001  # None: ultralytics' (with optimizer auto, fitted to the class count)
    nbs: int | None = None  # None: the batch size, so the optimizer steps every batch
    gamma_lr_scale: float = 6.0  # the penalized γ's lr as a multiple of lr0
    optimizer_reason: str = ("Measured at 8 epochs (10% of the baseline's) from trained yolov8n on the digits and shapes "
                             "benchmarks, three seeds each (docs/BENCHMARKS.md): slimming at the measured safe ratio "
                             "then lost at most 0.004 mAP50-95 on digits (ratio 0.83-0.84, 2.0x fewer GFLOPs) and "
                             "0.008 on shapes (0.72-0.76); one lr 0.002 for every weight allowed only 0.10-0.15 on "
                             "shapes, ultralytics' 'auto' and SGD no cut past 0.5.")

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
        lr += f", the penalized γ at --gamma-lr-scale {self.gamma_lr_scale:g} x that" if self.gamma_lr_scale != 1 else ""
        nbs = f"--nbs {self.nbs}" if self.nbs else "--nbs = --batch"
        return (f"Defaults (yoloslim/sparsity/defaults.py): --optimizer {self.optimizer} ({lr}), {nbs}, --sr "
                f"{self.sr:g} with a {self.schedule} schedule, --method {self.method}. The optimizer steps every "
                f"batch because ultralytics' default nbs 64 accumulates 64/batch batches per step, so a short sparse "
                f"run would make few steps and γ would barely move. {self.optimizer_reason} The run ends by measuring, on "
                f"last.pt and best.pt, the largest classic --prune-ratio (with --round-up 8) whose cut keeps every "
                f"task loss within +5% on a few training batches, records it in them, and prints one line with it.")


SPARSE_DEFAULTS = SparseDefaults()  # benchmarks/sparse_defaults.py's winner
