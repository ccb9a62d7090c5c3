"""What changes with the task a model solves: its ultralytics model class, validator and metrics.

ultralytics builds the same backbones for detection, instance segmentation, pose, oriented boxes and
classification; a model's head says which task it is. Everything yoloslim does to a model (pruning,
sparse training, distillation) is the same for all five; only which trainer and validator run, how
the dataset is laid out and which accuracy the tables report differ, and those differences live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from yoloslim.errors import UserError

BOX_METRICS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
}


@dataclass(frozen=True)
class Task:
    name: str
    model_class: str  # in ultralytics.nn.tasks
    validator: str  # "module:Class" in ultralytics
    metrics: dict[str, str]  # ultralytics' metric key -> yoloslim's short name
    primary: str  # the short name that judges accuracy (fitness of pruning studies, report tables)
    primary_label: str  # how tables title it

    def validator_class(self) -> type:
        module, name = self.validator.split(":")
        return getattr(__import__(module, fromlist=[name]), name)

    def model_builder(self) -> type:
        from ultralytics.nn import tasks

        return getattr(tasks, self.model_class)


TASKS: dict[str, Task] = {
    "detect": Task("detect", "DetectionModel", "ultralytics.models.yolo.detect:DetectionValidator", BOX_METRICS,
                   "map50_95", "mAP50-95"),
    "segment": Task("segment", "SegmentationModel", "ultralytics.models.yolo.segment:SegmentationValidator",
                    {**BOX_METRICS, "metrics/mAP50(M)": "mask_map50", "metrics/mAP50-95(M)": "mask_map50_95"},
                    "mask_map50_95", "mask mAP50-95"),
    "pose": Task("pose", "PoseModel", "ultralytics.models.yolo.pose:PoseValidator",
                 {**BOX_METRICS, "metrics/mAP50(P)": "pose_map50", "metrics/mAP50-95(P)": "pose_map50_95"},
                 "pose_map50_95", "pose mAP50-95"),
    "obb": Task("obb", "OBBModel", "ultralytics.models.yolo.obb:OBBValidator", BOX_METRICS,
                "map50_95", "OBB mAP50-95"),
    "classify": Task("classify", "ClassificationModel", "ultralytics.models.yolo.classify:ClassificationValidator",
                     {"metrics/accuracy_top1": "top1", "metrics/accuracy_top5": "top5"}, "top1", "top-1"),
}
ACCURACY_KEYS = tuple(dict.fromkeys(short for task in TASKS.values() for short in task.metrics.values()))


OPEN_VOCABULARY = "open-vocabulary"
MODEL_CLASS_TASKS = {"SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
                     "ClassificationModel": "classify", "SemanticSegmentationModel": "semantic", "DepthModel": "depth",
                     "WorldModel": OPEN_VOCABULARY, "YOLOEModel": OPEN_VOCABULARY, "YOLOESegModel": OPEN_VOCABULARY,
                     "DetectionModel": "detect"}
OPEN_VOCABULARY_HEADS = ("WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26")


def task_of(model: nn.Module | str | Path) -> str:
    """The task of a module (from its class, which a checkpoint cannot misstate) or of a model yaml (from its
    head); refuses tasks yoloslim does not handle."""
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    from yoloslim.models.anchor_specs import is_anchor_cfg

    if isinstance(model, nn.Module):
        found = (MODEL_CLASS_TASKS.get(cls.__name__) for cls in type(model).__mro__)
        name = next((task for task in found if task), "detect")  # yoloslim's anchor-based families detect
    elif is_anchor_cfg(str(model)):
        name = "detect"
    else:
        cfg = yaml_model_load(str(model))
        head = str(cfg["head"][-1][2]) if cfg.get("head") else ""
        name = OPEN_VOCABULARY if head in OPEN_VOCABULARY_HEADS else guess_model_task(cfg) or "detect"  # RT-DETR: none
    if name == OPEN_VOCABULARY:
        raise UserError(f"{_describe(model)} is an open-vocabulary model (YOLO-World/YOLOE): its classes are text "
                        f"embeddings from a CLIP text encoder, whose weights are a download, and its layers take them "
                        f"as a second input — yoloslim handles closed-set models such as yolov8n.yaml or yolo11n-seg.yaml")
    if name not in TASKS:
        raise UserError(f"{_describe(model)} is a {name!r} model — yoloslim handles {', '.join(TASKS)} models")
    return name


def task_spec(model: nn.Module | str | Path) -> Task:
    return TASKS[task_of(model)]


def _describe(model: nn.Module | str | Path) -> str:
    return type(model).__name__ if isinstance(model, nn.Module) else str(model)


def check_data_for(model: nn.Module, data: str | Path) -> Path:
    """The dataset path ultralytics takes for ``model``, once its task, class count and keypoints fit the model."""
    from yoloslim.data.checks import check_dataset
    from yoloslim.engine.trainer import head_nc

    head = model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None
    return check_dataset(data, task=task_of(model), nc=head_nc(model), kpt_shape=getattr(head, "kpt_shape", None))
