"""Knowledge distillation: a teacher guides a (possibly pruned) student during training.

recorders (which layers) → connectors (channel alignment) → losses (logit/feature) → schedules
(weight over the run), assembled by :mod:`criterion` and driven by the trainer callbacks in
:mod:`callback`; :mod:`tasks` says which terms apply to which task (detect, segment, pose, obb,
classify). Entry points: :func:`distill` (Python), ``yoloslim distill`` (CLI), and
:func:`distill_callbacks` + :mod:`cli_args` for other commands that train.
"""

from yoloslim.distill.api import distill
from yoloslim.distill.callback import Distiller, distill_callbacks
from yoloslim.distill.config import DistillConfig

__all__ = ["DistillConfig", "Distiller", "distill", "distill_callbacks"]
