"""Distillation for every task: segment, pose, obb and classify students learn from a teacher of their own task —
feature terms everywhere, box/class logit terms for box heads, softened-KL logits for classifiers — and a teacher
that cannot teach the student fails in one line naming both."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from ultralytics.cfg import get_cfg

from yoloslim.distill.api import distill
from yoloslim.distill.callback import load_teacher
from yoloslim.distill.class_logits import SoftenedKLDivergence, check_classifiers_compatible
from yoloslim.distill.config import DistillConfig
from yoloslim.distill.criterion import build_distillation
from yoloslim.distill.heads import check_heads_compatible, teacher_foreground, training_outputs
from yoloslim.distill.losses import build_logit_loss
from yoloslim.engine.checkpoint import save_model_checkpoint
from yoloslim.errors import UserError
from yoloslim.models.load import build_from_yaml
from yoloslim.report.metrics import count_params

IMGSZ = 64
KPT_SHAPE = [4, 3]
# task: (model yaml, --logit, --feature, the layers feeding its head) — every loss appears at least once
RUNS = {
    "segment": ("yolov8n-seg.yaml", "l2", "cwd", [15, 18, 21]),
    "pose": ("yolo11n-pose.yaml", "ast", "mgd", [16, 19, 22]),
    "obb": ("yolov8n-obb.yaml", "l1", "mimic", [15, 18, 21]),
    "classify": ("yolo11n-cls.yaml", "kl", "cwd", [9]),  # Classify (layer 10) reads the layer before it
}


def build(yaml: str, seed: int = 0, nc: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = build_from_yaml(yaml, nc=nc, kpt_shape=KPT_SHAPE if "pose" in yaml else None)
    model.args = get_cfg()
    return model


def one_line_error(call, *named: str) -> str:
    with pytest.raises(UserError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in named), message
    return message


# --- a real one-epoch run per task --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task", list(RUNS))
def test_pruned_student_distils_one_epoch_and_reloads(task: str, tmp_path: Path) -> None:
    from ultralytics import YOLO

    from yoloslim.data import generate_dataset
    from yoloslim.prune.api import prune_model

    yaml, logit, feature, layers = RUNS[task]
    data = generate_dataset("shapes", tmp_path / "data", n_train=8, n_val=4, imgsz=IMGSZ, seed=0,
                            show_progress=False, task=task)
    teacher = save_model_checkpoint(build(yaml, seed=1), tmp_path / "teacher.pt")
    student = prune_model(build(yaml), method="lamp", speed_up=2.0, imgsz=IMGSZ, log=lambda _: None).model
    result = distill(student, data, teacher, logit=logit, feature=feature, temperature=2.0, epochs=1, imgsz=IMGSZ,
                     batch=4, workers=0, plots=False, project=tmp_path / "runs", name="kd")

    with open(result.save_dir / "results.csv") as f:
        row = next(csv.DictReader(f))
    for column in (f"train/logit_{logit}", f"train/feat_{feature}"):
        value = float(row[column])
        assert math.isfinite(value) and value > 0, (column, value)
    assert not any(k.startswith(("val/logit_", "val/feat_")) for k in row)  # training-only terms

    for path in (result.best, result.last):
        saved = YOLO(str(path)).model  # plain ultralytics reloads the student
        assert type(saved) is type(student), path
        assert count_params(saved) == count_params(student)  # still pruned, no connectors or generators inside
        assert saved.state_dict().keys() == student.state_dict().keys()
        assert saved.yoloslim["distill"]["logit"] == logit
        assert saved.yoloslim["distill"]["student_layers"] == saved.yoloslim["distill"]["teacher_layers"] == layers
        with torch.no_grad():
            saved.float().eval()(torch.zeros(1, 3, IMGSZ, IMGSZ))


# --- box heads: logits compared on each task's batch ---------------------------------------------------------------

BOXES = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.25, 0.3, 0.3, 0.3], [0.6, 0.6, 0.5, 0.4]])
ANGLES = torch.tensor([[0.3], [-0.5], [1.0]])


def box_batch(task: str) -> dict:
    """A two-image batch as each task's dataloader collates it (OBB boxes are normalised xywhr)."""
    torch.manual_seed(0)
    batch = {"img": torch.rand(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
             "cls": torch.tensor([[0.0], [1.0], [2.0]]), "bboxes": BOXES}
    extra = {"segment": {"masks": torch.zeros(2, IMGSZ // 4, IMGSZ // 4)},
             "pose": {"keypoints": torch.rand(3, *KPT_SHAPE)},
             "obb": {"bboxes": torch.cat([BOXES, ANGLES], 1)}}
    return {**batch, **extra[task]}


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_box_logit_losses_are_zero_for_identical_heads_on_each_tasks_batch(task: str) -> None:
    yaml = RUNS[task][0]
    student, other = build(yaml), build(yaml, seed=1)
    batch = box_batch(task)
    layout = check_heads_compatible(student, other)
    assert layout.rotated == (task == "obb")
    with torch.no_grad():
        same = training_outputs(student.train()(batch["img"]))
        different = training_outputs(other.train()(batch["img"]))
    for name in ("l1", "l2", "ast"):
        loss = build_logit_loss(name, layout)
        assert float(loss(same, same, batch)) == pytest.approx(0.0, abs=1e-6), name
        assert float(loss(same, different, batch)) > 1e-5, name
    assert teacher_foreground(different, batch, layout).any()


def test_obb_foreground_follows_the_box_angle() -> None:
    """A long thin box turned by 90° covers other anchors: the rotated assigner sees the angle."""
    teacher = build(RUNS["obb"][0])
    layout = check_heads_compatible(teacher, teacher)
    with torch.no_grad():
        outputs = training_outputs(teacher.train()(torch.rand(1, 3, IMGSZ, IMGSZ)))
    masks = []
    for angle in (0.0, math.pi / 2):
        batch = {"img": torch.zeros(1, 3, IMGSZ, IMGSZ), "batch_idx": torch.zeros(1), "cls": torch.zeros(1, 1),
                 "bboxes": torch.tensor([[0.5, 0.5, 0.8, 0.15, angle]])}
        masks.append(teacher_foreground(outputs, batch, layout))
    assert masks[0].any() and masks[1].any() and not torch.equal(masks[0], masks[1])


# --- classifiers -----------------------------------------------------------------------------------------------------


def test_softened_kl_is_zero_for_equal_logits_and_matches_a_hand_computation() -> None:
    temperature = 2.0
    loss = SoftenedKLDivergence(check_classifiers_compatible(build("yolov8n-cls.yaml"), build("yolov8n-cls.yaml")),
                                temperature)
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.5, -1.0, 2.5]])
    assert float(loss(teacher, teacher, {})) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(student, teacher, {})) > 0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / temperature) for v in row]
        return [v / sum(e) for v in e]

    per_image = []
    for s, t in zip(student.tolist(), teacher.tolist()):
        p_s, p_t = softmax(s), softmax(t)
        per_image.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    expected = temperature**2 * sum(per_image) / len(per_image)
    assert float(loss(student, teacher, {})) == pytest.approx(expected, rel=1e-5)


def test_classifier_criterion_keeps_the_cross_entropys_scale_and_skips_eval_outputs() -> None:
    """The classification loss is a batch mean (not per-image × batch like box losses), and so are the terms; its
    eval-mode output (probabilities, logits) is a tuple, which carries no distillation."""
    student, teacher = build("yolov8n-cls.yaml"), build("yolov8n-cls.yaml", seed=1)
    criterion = build_distillation(student, teacher, DistillConfig(teacher=teacher, logit="kl", feature="mimic"),
                                   IMGSZ)
    student.criterion = criterion
    batch = {"img": torch.rand(4, 3, IMGSZ, IMGSZ), "cls": torch.tensor([0, 1, 2, 0])}
    try:
        assert criterion.student_recorder.layers == [8]  # Classify reads the layer before it (f = -1)
        loss, items = student.train().loss(batch)
        assert list(items) == ["loss", "logit_kl", "feat_mimic"]
        assert loss.tolist() == pytest.approx([float(v) for v in items.values()])
        assert all(float(v) > 0 for v in items.values())
        student.eval()
        with torch.no_grad():
            _, items = student.loss(batch, student(batch["img"]))
        assert float(items["logit_kl"]) == 0 and float(items["feat_mimic"]) == 0
    finally:
        criterion.close()
        student.criterion = None


def test_a_classifier_teacher_of_other_classes_still_teaches_features() -> None:
    student, teacher = build("yolov8n-cls.yaml"), build("yolov8n-cls.yaml", seed=1, nc=5)
    criterion = build_distillation(student, teacher, DistillConfig(teacher=teacher, feature="cwd"), IMGSZ)
    criterion.close()
    assert criterion.names == ["feat_cwd"] and criterion.logit_loss is None


# --- what cannot be distilled fails in one line ---------------------------------------------------------------------


def test_teacher_of_another_task_is_refused_naming_both() -> None:
    student, teacher = build("yolov8n-seg.yaml"), build("yolov8n.yaml")
    config = DistillConfig(teacher=teacher, feature="cwd")
    one_line_error(lambda: build_distillation(student, teacher, config, IMGSZ),
                   "segment", "SegmentationModel", "detect", "DetectionModel")
    assert not any(m._forward_hooks for m in (*student.modules(), *teacher.modules()))
    classifier = build("yolov8n-cls.yaml")
    built = []
    trainer = SimpleNamespace(model=classifier, get_model=lambda **kw: built.append(kw))
    one_line_error(lambda: load_teacher("yolov8n-pose.yaml", trainer), "classify", "pose", "yolov8n-pose.yaml")
    assert not built  # refused before the trainer built the yaml as a classifier


def test_classifiers_with_different_class_counts_are_refused_for_logits() -> None:
    student, teacher = build("yolov8n-cls.yaml"), build("yolov8n-cls.yaml", nc=5)
    config = DistillConfig(teacher=teacher, logit="kl")
    message = one_line_error(lambda: build_distillation(student, teacher, config, IMGSZ), "predicts 3", "teacher")
    assert "ClassificationModel) 5" in message


def test_logit_terms_of_another_head_kind_are_refused(tmp_path: Path) -> None:
    one_line_error(lambda: DistillConfig(teacher=build("yolov8n-cls.yaml"), logit="l2"),
                   "unknown --logit 'l2' for classify models", "choose kl")
    one_line_error(lambda: DistillConfig(teacher="yolov8n-seg.yaml", logit="kl"),
                   "unknown --logit 'kl' for segment models", "l1, l2, ast", "classifiers")
    # a checkpoint's task is known once it is loaded, at setup
    obb = build("yolov8n-obb.yaml")
    config = DistillConfig(teacher=save_model_checkpoint(obb, tmp_path / "obb.pt"), logit="kl")
    one_line_error(lambda: build_distillation(build("yolov8n-obb.yaml", seed=1), obb, config, IMGSZ),
                   "unknown --logit 'kl' for obb models")
