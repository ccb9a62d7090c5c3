"""Distillation pieces: losses have their zero where student equals teacher, gradients reach the
student and connectors but never the teacher, schedules, and the setup's error messages."""

from __future__ import annotations

import argparse
import copy
import pickle

import pytest
import torch
from torch import nn

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import v8DetectionLoss

from yoloslim.distill.callback import Distiller
from yoloslim.distill.cli_args import add_distill_args, distill_config
from yoloslim.distill.config import DistillConfig
from yoloslim.distill.criterion import build_distillation
from yoloslim.distill.heads import check_heads_compatible, head_layout, training_outputs
from yoloslim.distill.losses import CWDLoss, MGDLoss, MimicLoss, build_logit_loss
from yoloslim.distill.schedules import schedule_factor
from yoloslim.errors import UserError

IMGSZ = 64


def detector(yaml: str, nc: int = 3, seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel(yaml, nc=nc, verbose=False)
    model.args = get_cfg()
    return model


@pytest.fixture(scope="module")
def student() -> DetectionModel:
    return detector("yolov8n.yaml")


@pytest.fixture(scope="module")
def teacher() -> DetectionModel:
    """Wider than the student (yolov8s vs n), so connectors have channels to align."""
    return detector("yolov8s.yaml", seed=1)


@pytest.fixture
def batch() -> dict:
    torch.manual_seed(0)
    return {
        "img": torch.rand(2, 3, IMGSZ, IMGSZ),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.25, 0.3, 0.3, 0.3], [0.6, 0.6, 0.5, 0.4]]),
    }


@pytest.mark.parametrize(
    "name, start, middle, end",
    [("constant", 1.0, 1.0, 1.0), ("linear", 1.0, 0.5, 0.0), ("cosine", 1.0, 0.5, 0.0)],
)
def test_schedule_weights_at_start_middle_end(name: str, start: float, middle: float, end: float) -> None:
    assert [schedule_factor(name, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([start, middle, end], abs=1e-9)


def test_cosine_schedule_stays_high_longer_than_linear() -> None:
    assert schedule_factor("cosine", 0.25) > schedule_factor("linear", 0.25)
    assert schedule_factor("cosine", 0.75) < schedule_factor("linear", 0.75)


def _identity_generator(mgd: MGDLoss) -> None:
    """Generators that pass features through unchanged: MGD's zero point with nothing masked."""
    for generator in mgd.generators:
        for conv in (generator[0], generator[2]):
            nn.init.dirac_(conv.weight)
            nn.init.zeros_(conv.bias)


def test_feature_losses_vanish_when_aligned_student_equals_teacher() -> None:
    torch.manual_seed(0)
    teacher = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]  # non-negative, so ReLU keeps them
    other = [torch.rand_like(t) for t in teacher]
    mgd = MGDLoss([8, 16], mask_ratio=0.0)
    _identity_generator(mgd)
    with torch.no_grad():
        for loss in (MimicLoss(), CWDLoss(temperature=2.0), mgd):
            assert float(loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6), type(loss).__name__
            assert float(loss(other, teacher)) > 1e-4, type(loss).__name__


def test_cwd_is_scaled_by_squared_temperature() -> None:
    """For logits/τ the KL shrinks like 1/τ²; the τ² factor keeps gradient scale comparable across τ."""
    torch.manual_seed(0)
    s, t = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    scaled, unit = CWDLoss(100.0)([s * 100], [t * 100]), CWDLoss(1.0)([s], [t])
    assert float(scaled) == pytest.approx(100.0**2 * float(unit), rel=1e-4)


def test_mgd_masks_the_requested_fraction() -> None:
    mgd = MGDLoss([4], mask_ratio=0.65)
    seen = []
    mgd.generators[0].register_forward_pre_hook(lambda m, x: seen.append(x[0]))
    mgd([torch.ones(8, 4, 16, 16)], [torch.ones(8, 4, 16, 16)])
    assert float((seen[0] == 0).float().mean()) == pytest.approx(0.65, abs=0.05)


@pytest.mark.parametrize("name", ["l1", "l2", "ast"])
def test_logit_losses_are_zero_for_identical_models(name: str, student, batch) -> None:
    layout = check_heads_compatible(student, student)
    twin = copy.deepcopy(student)
    for conv in (*twin.model[-1].cv2, *twin.model[-1].cv3):  # a different teacher must give a positive loss
        conv[2].bias.data += 3.0
    loss = build_logit_loss(name, layout)
    student.train()
    with torch.no_grad():
        same = training_outputs(student(batch["img"]))
        different = training_outputs(twin.train()(batch["img"]))
    assert float(loss(same, same, batch)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(same, different, batch)) > 1e-4


def test_head_mismatch_names_every_difference(student) -> None:
    with pytest.raises(UserError, match=r"nc: student 3 vs teacher 80"):
        check_heads_compatible(student, detector("yolov8n.yaml", nc=80))
    assert head_layout(student, "student").reg_max == 16


@pytest.mark.parametrize("logit, feature", [("l2", "cwd"), ("ast", "mgd"), ("l1", "mimic")])
def test_gradients_reach_student_and_connectors_never_teacher(logit, feature, student, teacher, batch) -> None:
    config = DistillConfig(teacher=teacher, logit=logit, feature=feature)
    criterion = build_distillation(student, teacher, config, IMGSZ)
    student.criterion = criterion
    try:
        student.train()
        student.zero_grad()
        loss, items = student.loss(batch)
        assert list(items) == ["box_loss", "cls_loss", "dfl_loss", f"logit_{logit}", f"feat_{feature}"]
        assert loss.shape == (5,)
        assert not criterion.student_recorder.outputs and not criterion.teacher_recorder.outputs  # freed
        loss.sum().backward()
        assert student.model[0].conv.weight.grad.abs().sum() > 0
        connector_params = list(criterion.trainable_parameters())
        assert connector_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in connector_params)
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
        assert not teacher.training
    finally:
        criterion.close()
        student.criterion = None
        student.zero_grad()


def test_feature_gradient_reaches_the_student_through_the_connector(student, teacher, batch) -> None:
    """With the logit term off, the student's backbone still learns from the feature term alone."""
    criterion = build_distillation(student, teacher, DistillConfig(teacher=teacher, feature="mimic"), IMGSZ)
    try:
        student.train()
        student.zero_grad()
        student(batch["img"])
        with torch.no_grad():
            teacher(batch["img"])
        features = [c(f) for c, f in zip(criterion.connectors, criterion.student_recorder.recorded())]
        criterion.feature_loss(features, criterion.teacher_recorder.recorded()).backward()
        assert student.model[0].conv.weight.grad.abs().sum() > 0
    finally:
        criterion.close()
        student.zero_grad()


def test_copies_of_the_student_never_carry_the_teacher(student, teacher) -> None:
    criterion = build_distillation(student, teacher, DistillConfig(teacher=teacher, logit="l2", feature="cwd"), IMGSZ)
    student.criterion = criterion
    try:
        for clone in (copy.deepcopy(student), pickle.loads(pickle.dumps(student))):
            assert type(clone.criterion) is v8DetectionLoss
            assert sum(p.numel() for p in clone.parameters()) == sum(p.numel() for p in student.parameters())
    finally:
        criterion.close()
        student.criterion = None
    assert not any(m._forward_hooks for m in student.modules())  # close() removed the recorders


def test_distiller_pickles_its_settings_only() -> None:
    distiller = Distiller(DistillConfig(teacher="yolov8s.yaml", logit="l2", feature="cwd", schedule="cosine"))
    distiller.criterion = object()  # runtime state, e.g. after setup in the main process
    clone = pickle.loads(pickle.dumps(distiller.callbacks()))
    restored = clone[0][1].__self__
    assert restored.config.schedule == "cosine" and restored.criterion is None
    assert [event for event, _ in clone][0] == "on_pretrain_routine_end"


@pytest.mark.parametrize("layers", [[23], [22], [-1]])
def test_the_head_and_beyond_are_not_feature_layers(layers: list[int], student, teacher) -> None:
    with pytest.raises(UserError, match=r"out of range — the student has layers 0..21 before its head"):
        build_distillation(student, teacher, DistillConfig(teacher=teacher, feature="cwd", student_layers=layers), IMGSZ)


def test_layers_of_different_stride_are_rejected(student, teacher) -> None:
    config = DistillConfig(teacher=teacher, feature="mimic", student_layers=[15], teacher_layers=[18])
    with pytest.raises(UserError, match=r"student layer 15 gives 8x8 maps but teacher layer 18 gives 4x4"):
        build_distillation(student, teacher, config, IMGSZ)
    assert not any(m._forward_hooks for m in (*student.modules(), *teacher.modules()))  # no hooks left behind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs --logit and/or --feature"),
        ({"teacher": "missing.pt", "feature": "cwd"}, "checkpoint not found: 'missing.pt'"),
        ({"logit": "kl"}, "unknown --logit 'kl'"),
        ({"feature": "cwd", "temperature": 0}, "--temperature must be > 0"),
        ({"feature": "cwd", "student_layers": [15, 18], "teacher_layers": [15]}, "2 student layers but 1 teacher"),
        ({"feature": "cwd", "schedule": "step"}, "unknown distillation schedule 'step'"),
        ({"feature": "mgd", "mask_ratio": 1.0}, r"--mask-ratio must be in \[0, 1\)"),
    ],
)
def test_bad_settings_fail_with_one_clear_line(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DistillConfig(**{"teacher": "yolov8s.yaml", **kwargs})


def test_cli_args_build_the_config_and_teacher_is_optional_for_finetune() -> None:
    parser = argparse.ArgumentParser()
    add_distill_args(parser, teacher_required=False)
    assert distill_config(parser.parse_args([])) is None
    config = distill_config(parser.parse_args(
        ["--teacher", "yolov8s.yaml", "--logit", "ast", "--feature", "mgd", "--layers", "15,18,21",
         "--teacher-layers", "4,6,9", "--schedule", "linear", "--feature-weight", "2"]
    ))
    assert (config.logit, config.feature, config.schedule, config.feature_weight) == ("ast", "mgd", "linear", 2.0)
    assert (config.student_layers, config.teacher_layers) == ([15, 18, 21], [4, 6, 9])
    with pytest.raises(SystemExit):
        parser.parse_args(["--teacher", "yolov8s.yaml", "--layers", "15,x"])


def _fake_trainer(epoch: int, epochs: int, batches: int, lr: float = 0.0):
    from types import SimpleNamespace

    main = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr, betas=(0.9, 0.999))
    return SimpleNamespace(
        epoch=epoch, epochs=epochs, train_loader=[None] * batches, optimizer=main, clip_grad_norm=10.0,
        scaler=torch.amp.GradScaler("cuda", enabled=False),
    )


def test_schedule_is_applied_per_iteration() -> None:
    from types import SimpleNamespace

    distiller = Distiller(DistillConfig(teacher="yolov8s.yaml", feature="cwd", schedule="linear"))
    distiller.criterion = SimpleNamespace(factor=None)
    trainer = _fake_trainer(epoch=1, epochs=2, batches=4)
    distiller.start_epoch(trainer)
    factors = []
    for _ in range(4):
        distiller.set_weight(trainer)
        factors.append(distiller.criterion.factor)
    assert factors == pytest.approx([0.5, 0.375, 0.25, 0.125])


def test_connectors_step_with_the_trainers_learning_rate(student, teacher, batch) -> None:
    from yoloslim.distill.callback import companion_optimizer

    distiller = Distiller(DistillConfig(teacher=teacher, feature="mimic"))
    trainer = _fake_trainer(epoch=0, epochs=1, batches=1, lr=0.01)
    distiller.criterion = build_distillation(student, teacher, distiller.config, IMGSZ)
    student.criterion = distiller.criterion
    distiller._student = student
    try:
        params = list(distiller.criterion.trainable_parameters())
        distiller.optimizer = companion_optimizer(trainer.optimizer, params)
        assert type(distiller.optimizer) is torch.optim.AdamW
        before = [p.detach().clone() for p in params]
        student.train()
        student.loss(batch)[0].sum().backward()
        distiller.step_connectors(trainer)
        assert distiller.optimizer.param_groups[0]["lr"] == 0.01
        assert all(not torch.equal(a, p) for a, p in zip(before, params))
        assert all(p.grad is None or not p.grad.any() for p in params)
    finally:
        distiller.close()
        student.zero_grad()
    assert student.criterion is None
