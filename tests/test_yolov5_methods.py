"""Every yoloslim method on the anchor-based YOLOv5: every pruning method (PAGCP included), classic slimming with each
shortcut strategy, sparse training's derived exclusions, distillation (objectness included), and pruned
checkpoints that reload in a fresh process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from conftest import distill_one_epoch, outputs_in_fresh_process, pruned_once
from yoloslim.engine.checkpoint import checkpoint_module, read_checkpoint, save_model_checkpoint
from yoloslim.errors import UserError
from yoloslim.models.yolov5.model import YOLOv5DetectionModel
from yoloslim.prune.methods import METHODS
from yoloslim.report.metrics import count_params

IMGSZ = 64


def predictions(model: torch.nn.Module) -> torch.Tensor:
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)[0]


def yolov5n(seed: int = 0) -> YOLOv5DetectionModel:
    """3 classes (the shapes data) and spread-out BN γ, as after training, so that |γ| rankings mean something."""
    torch.manual_seed(seed)
    model = YOLOv5DetectionModel("yolov5n-anchor.yaml", nc=3, verbose=False)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data.uniform_(0.05, 1.0)
    return model


@pytest.fixture(scope="module")
def yolov5n_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model_checkpoint(yolov5n(), tmp_path_factory.mktemp("yolov5") / "yolov5n-3.pt")


@pytest.fixture(scope="module")
def pruned(yolov5n_pt: Path, shapes_data: str) -> Callable:
    """``pruned(method)``: yolov5n pruned to 1.5x at 64 px, computed once per method for this module's tests."""
    return pruned_once(yolov5n_pt, shapes_data, speed_up=1.5, imgsz=IMGSZ)


@pytest.fixture(scope="module")
def slimmed(yolov5n_pt: Path) -> Callable:
    """``slimmed(shortcut)``: classic slimming at ratio 0.3 with 8x round-up, computed once per strategy."""
    from yoloslim.prune.classic import slim_prune_model

    results = {}

    def run(shortcut: str):
        if shortcut not in results:
            results[shortcut] = slim_prune_model(yolov5n_pt, 0.3, shortcut=shortcut, round_up=8, imgsz=IMGSZ)
        return results[shortcut]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_planner_method_prunes_it(method: str, pruned: Callable) -> None:
    result = pruned(method)
    assert result.reached, result.note
    assert 1.5 <= result.speed_up <= 1.5 * 1.05 and result.params < result.base_params
    assert predictions(result.model).shape == (1, 4 + 3, 252)
    head = result.model.model[-1]
    assert [conv.out_channels for conv in head.m] == [3 * 8] * 3  # the prediction convs keep the output format


@pytest.mark.slow
def test_classic_slimming_strategies_and_round_up(slimmed: Callable) -> None:
    params = {}
    for shortcut in ("skip", "first", "union"):
        result = slimmed(shortcut)
        assert predictions(result.model).shape == (1, 7, 252)
        changed = [c for c in result.channels if c["after"] < c["before"]]
        assert changed and all(c["after"] % 8 == 0 for c in changed)
        bottleneck_out = result.model.model[2].m[0].cv2.conv.out_channels  # added to C3's cv1 output
        assert bottleneck_out == result.model.model[2].cv1.conv.out_channels
        params[shortcut] = result.params
    assert params["first"] < params["union"] <= params["skip"]  # skip never prunes the residual-tied channels


@pytest.mark.slow
def test_pruned_and_slimmed_checkpoints_reload_in_a_fresh_process(pruned: Callable, slimmed: Callable,
                                                                  tmp_path: Path) -> None:
    # only what the output format fixes keeps its width: the three 1x1 prediction convs
    assert {name for name, _ in pruned("lamp").protected} == {"model.24.m.0", "model.24.m.1", "model.24.m.2"}
    models = {"lamp": pruned("lamp").model, "slim-union": slimmed("union").model}
    paths = [save_model_checkpoint(m, tmp_path / f"{name}.pt") for name, m in models.items()]
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    for path, (count, out) in zip(paths, outputs_in_fresh_process(paths, x, tmp_path)):
        module = checkpoint_module(read_checkpoint(path)).eval()
        assert count == count_params(module) < count_params(yolov5n())
        with torch.no_grad():
            assert torch.equal(out, module(x)[0])


def test_sparse_training_leaves_the_residual_tied_bns_alone() -> None:
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.selection import select_bns

    model = yolov5n()
    prunable = prepare_for_pruning(model, imgsz=IMGSZ)
    selection = select_bns(model, build_dependency_graph(prunable), prunable.ignored_layers, False)
    tied = {name for name, reason in selection.excluded.items() if "residual" in reason}
    # the backbone C3s add each bottleneck's output to the bottleneck input (C3.cv1's output); the neck's do not
    assert tied == {"model.2.cv1.bn", "model.2.m.0.cv2.bn", "model.4.cv1.bn", "model.4.m.0.cv2.bn",
                    "model.4.m.1.cv2.bn", "model.6.cv1.bn", "model.6.m.0.cv2.bn", "model.6.m.1.cv2.bn",
                    "model.6.m.2.cv2.bn", "model.8.cv1.bn", "model.8.m.0.cv2.bn"}
    assert "model.13.cv1.bn" in selection.penalized and "model.13.m.0.cv2.bn" in selection.penalized


@pytest.mark.slow
def test_sparse_training_runs_from_the_family_yaml(shapes_data: str, tmp_path: Path) -> None:
    from yoloslim.sparsity.api import sparse_train

    # measure_cut=False: the safe-ratio search (tested in test_measured_cut) made this test 79 s instead of ~20
    result = sparse_train("yolov5n-anchor.yaml", shapes_data, sr=1e-2, epochs=1, imgsz=IMGSZ, batch=8, workers=0,
                          plots=False, project=tmp_path, name="sparse", measure_cut=False)
    model = checkpoint_module(read_checkpoint(result.best))
    assert type(model) is YOLOv5DetectionModel and model.model[-1].nc == 3
    assert "model.13.cv1.bn" in model.yoloslim["sparse"]["penalized"]


def test_logit_distillation_covers_objectness() -> None:
    from yoloslim.distill.anchor_logits import build_anchor_logit_loss
    from yoloslim.distill.heads import check_heads_compatible

    student, teacher = yolov5n(), yolov5n()
    layout = check_heads_compatible(student, teacher)
    batch = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]]), "img": torch.zeros(1, 3, IMGSZ, IMGSZ)}
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    outputs = teacher.train()(x)
    for name in ("l1", "l2", "ast"):
        assert build_anchor_logit_loss(name, layout)(student.train()(x), outputs, batch).item() == pytest.approx(0)
    with torch.no_grad():  # the student differs from the teacher in objectness only: ~0.5 where the teacher has ~0
        for conv in student.model[-1].m:
            conv.bias.view(3, 8)[:, 4] = 0.0
    for name in ("l1", "l2", "ast"):
        assert build_anchor_logit_loss(name, layout)(student(x), outputs, batch).item() > 0.01, name


def test_logit_distillation_refuses_heads_of_another_kind() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from yoloslim.distill.heads import check_heads_compatible

    with pytest.raises(UserError, match="Detect and the teacher AnchorDetect .*--feature") as error:
        check_heads_compatible(DetectionModel("yolov8n.yaml", nc=3, verbose=False), yolov5n())
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="nc: student 3 vs teacher 80"):
        check_heads_compatible(yolov5n(), YOLOv5DetectionModel("yolov5n-anchor.yaml", verbose=False))


@pytest.mark.slow
def test_distill_command_trains_a_yaml_student_from_a_yolov5_teacher(yolov5n_pt: Path, shapes_data: str,
                                                                      tmp_path: Path) -> None:
    row = distill_one_epoch("yolov5n-anchor.yaml", str(yolov5n_pt), shapes_data, tmp_path, IMGSZ)
    for column in ("train/box_loss", "train/obj_loss", "train/logit_l2", "train/feat_cwd"):
        assert float(row[column]) > 0, column
    student = checkpoint_module(read_checkpoint(tmp_path / "kd" / "weights" / "best.pt"))
    assert type(student) is YOLOv5DetectionModel and count_params(student) == count_params(yolov5n())
    assert student.yoloslim["distill"]["teacher_layers"] == [17, 20, 23]
