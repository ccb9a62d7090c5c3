"""What checkpoints of the original YOLOv7 repo may contain, and how their RepConv layout maps onto ours, for
the shared importer (``models/original_checkpoints.py``).

The original's RepConv keeps its branches as ``rbr_dense`` and ``rbr_1x1`` (each a Sequential of conv and
BatchNorm), an optional ``rbr_identity`` BatchNorm, or — once reparameterized for deployment — a single
``rbr_reparam`` conv. ultralytics' RepConv holds the same tensors as ``conv1``/``conv2`` (Conv blocks with
``conv``/``bn`` and no activation), ``bn``, and after fusing ``conv``. ``to_our_layout`` rewrites the
pickled tree accordingly before the shared importer compares it with the model its yaml builds.
"""

from __future__ import annotations

from yoloslim.models.original_checkpoints import Dialect, Pickled, make_placeholder

REPCONV = "models.common.RepConv"
BRANCHES = {"rbr_dense": "conv1", "rbr_1x1": "conv2"}


def _branch(sequential: Pickled) -> Pickled:
    """A (conv, BatchNorm) Sequential as the children of an ultralytics Conv without activation."""
    conv, bn = (sequential.children.get(k) for k in ("0", "1"))
    return make_placeholder("ultralytics.Conv", {"conv": conv, "bn": bn,
                                                 "act": make_placeholder("torch.nn.modules.linear.Identity")})


def to_our_layout(node: Pickled) -> bool:
    """Rewrite every pickled RepConv under ``node`` in place; True when any of them is in deploy (fused) form."""
    fused = False
    for child in node.children.values():
        if isinstance(child, Pickled):
            fused |= to_our_layout(child)
    if node.source != REPCONV:
        return fused
    modules = node.children
    ours = {ours_name: _branch(modules[theirs]) for theirs, ours_name in BRANCHES.items() if modules.get(theirs)}
    if modules.get("rbr_identity") is not None:
        ours["bn"] = modules["rbr_identity"]
    if modules.get("rbr_reparam") is not None:
        ours["conv"] = modules["rbr_reparam"]
        fused = True
    ours["act"] = modules.get("act")
    node.state["_modules"] = ours
    return fused


YOLOV7_DIALECT = Dialect(
    family="yolov7",
    classes=("models.yolo.Model", "models.yolo.IDetect", "models.yolo.Detect", "models.common.Conv",
             "models.common.Concat", "models.common.MP", "models.common.SP", "models.common.SPPCSPC",
             "models.common.RepConv", "models.common.ImplicitA", "models.common.ImplicitM"),
    heads={"IDetect": "IDetect", "Detect": "AnchorDetect"},
    to_our_layout=to_our_layout,
)
