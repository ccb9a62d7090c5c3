"""Synthetic data for segment, pose, obb and classify: ultralytics' formats, consistent with detect."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yoloslim.data import generate_dataset
from yoloslim.data import synth
from yoloslim.data.labels import Placed, outline, rotated_box
from yoloslim.errors import UserError

KINDS = ("shapes", "digits")
LABEL_TASKS = ("detect", "segment", "pose", "obb")
TINY = {"n_train": 6, "n_val": 3, "imgsz": 96, "seed": 5, "show_progress": False}
SIZE = TINY["imgsz"]
PX = 1 / SIZE  # one pixel in normalised coordinates


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):
    """``made(kind, task)``: the tiny dataset's root folder, generated once per module."""
    root = tmp_path_factory.mktemp("tasks")
    cache: dict[tuple[str, str], Path] = {}

    def get(kind: str, task: str) -> Path:
        if (kind, task) not in cache:
            result = generate_dataset(kind, root / f"{kind}-{task}", task=task, **TINY)
            cache[kind, task] = result if task == "classify" else result.parent
        return cache[kind, task]

    return get


def _label_files(root: Path) -> list[Path]:
    return sorted((root / "labels").rglob("*.txt"))


def _rows(root: Path) -> dict[str, list[list[float]]]:
    """Label rows of every file, keyed by path relative to ``labels/``."""
    return {str(p.relative_to(root / "labels")): [list(map(float, ln.split())) for ln in p.read_text().splitlines()]
            for p in _label_files(root)}


def _all_rows(root: Path) -> list[list[float]]:
    return [row for rows in _rows(root).values() for row in rows]


def _paired(made, kind: str, task: str) -> list[tuple[list[float], list[float]]]:
    """(detect row, ``task`` row) of the same object: same seed, same images, same line order."""
    det, other = _rows(made(kind, "detect")), _rows(made(kind, task))
    assert det.keys() == other.keys()
    pairs = []
    for name, rows in det.items():
        assert len(rows) == len(other[name]), name
        pairs += zip(rows, other[name])
    assert pairs
    return pairs


def _nc(kind: str) -> int:
    return len(synth.KINDS[kind][0])


def _rendered(kind: str, task: str, count: int = 6, imgsz: int = SIZE):
    """The objects the renderer placed in the first ``count`` train images (seed 5)."""
    render = synth.KINDS[kind][1]
    for index in range(count):
        yield from render(synth._image_rng(5, "train", index), imgsz, "train", index, task)[1]


# --------------------------------------------------------------------------- label formats


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("task", "valid_len"), [("segment", lambda n: n >= 7 and n % 2 == 1),
                                                 ("pose", lambda n: n == 5 + 12),
                                                 ("obb", lambda n: n == 9)], ids=["segment", "pose", "obb"])
def test_label_rows_have_the_task_format(made, kind: str, task: str, valid_len) -> None:
    rows = _all_rows(made(kind, task))
    assert rows
    for row in rows:
        assert valid_len(len(row)), row
        assert row[0] == int(row[0]) and 0 <= row[0] < _nc(kind)
        coords = row[1:] if task != "pose" else row[1:5] + [v for i, v in enumerate(row[5:]) if i % 3 != 2]
        assert all(0.0 <= v <= 1.0 for v in coords), row
        if task == "segment":
            assert (len(row) - 1) // 2 <= 64
        if task == "pose":
            assert row[7::3] == [2.0] * 4


@pytest.mark.parametrize("kind", KINDS)
def test_polygon_spans_the_detection_box(made, kind: str) -> None:
    for det, seg in _paired(made, kind, "segment"):
        assert det[0] == seg[0]
        xs, ys = seg[1::2], seg[2::2]
        cx, cy, w, h = det[1:]
        edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        assert np.allclose((min(xs), min(ys), max(xs), max(ys)), edges, atol=2 * PX), (det, seg)


@pytest.mark.parametrize("kind", KINDS)
def test_polygon_covers_every_mask_pixel(kind: str) -> None:
    """Digits use a convex hull precisely so that strokes split into blobs are all inside."""
    objects = list(_rendered(kind, "segment"))
    assert any(obj.fragmented for obj in objects) == (kind == "digits")
    for obj in objects:
        poly = outline(obj).reshape(-1, 1, 2)
        ys, xs = np.nonzero(obj.mask)
        for x, y in zip(xs + obj.x0 + 0.5, ys + obj.y0 + 0.5):
            assert cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -1.0


@pytest.mark.parametrize("kind", KINDS)
def test_pose_box_is_the_detect_box_and_keypoints_are_its_extremes(made, kind: str) -> None:
    for det, pose in _paired(made, kind, "pose"):
        assert pose[:5] == det
        cx, cy, w, h = det[1:]
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        (tx, ty), (bx, by), (lx, ly), (rx, ry) = (pose[5 + 3 * k: 7 + 3 * k] for k in range(4))
        for x, y in ((tx, ty), (bx, by), (lx, ly), (rx, ry)):
            assert x0 - PX <= x <= x1 + PX and y0 - PX <= y <= y1 + PX, pose
        assert ty <= min(by, ly, ry) and by >= max(ty, ly, ry), pose
        assert lx <= min(tx, bx, rx) and rx >= max(tx, bx, lx), pose
        assert abs(ty - y0) <= PX and abs(by - y1) <= PX and abs(lx - x0) <= PX and abs(rx - x1) <= PX, pose


@pytest.mark.parametrize("kind", KINDS)
def test_flip_idx_keeps_keypoint_meaning_after_a_horizontal_flip(made, kind: str) -> None:
    root = made(kind, "pose")
    spec = yaml.safe_load((root / "data.yaml").read_text())
    assert spec["kpt_shape"] == [4, 3] and spec["flip_idx"] == [0, 1, 3, 2]
    for row in _all_rows(root):
        kpts = np.array(row[5:]).reshape(4, 3)
        kpts[:, 0] = 1 - kpts[:, 0]
        top, bottom, left, right = kpts[spec["flip_idx"]]
        assert left[0] <= right[0] and left[0] <= min(top[0], bottom[0]) and right[0] >= max(top[0], bottom[0])
        assert top[1] <= bottom[1]


def _is_rectangle(corners: np.ndarray, tol: float = 1e-4) -> bool:
    sides = np.roll(corners, -1, axis=0) - corners
    lengths = np.linalg.norm(sides, axis=1)
    square_corners = [abs(float(sides[i] @ sides[(i + 1) % 4])) for i in range(4)]
    return (abs(lengths[0] - lengths[2]) < tol and abs(lengths[1] - lengths[3]) < tol
            and max(square_corners) < tol * max(lengths.max(), 1e-9))


def _inside(corners: np.ndarray, point: tuple[float, float]) -> bool:
    return cv2.pointPolygonTest(corners.reshape(-1, 1, 2).astype(np.float32), point, False) >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_obb_rows_are_rectangles_around_their_object(made, kind: str) -> None:
    unclipped = 0
    for row in _all_rows(made(kind, "obb")):
        corners = np.array(row[1:]).reshape(4, 2)
        if np.all((corners > 0) & (corners < 1)):  # corners clipped at the border no longer form a rectangle
            unclipped += 1
            assert _is_rectangle(corners), row
    assert unclipped
    if kind == "shapes":  # same images as detect, so the detect box is the object's box
        for det, obb in _paired(made, kind, "obb"):
            assert _inside(np.array(obb[1:]).reshape(4, 2), (det[1], det[2])), (det, obb)


@pytest.mark.parametrize("kind", KINDS)
def test_rotated_box_covers_the_mask_and_circles_stay_upright(kind: str) -> None:
    for obj in _rendered(kind, "obb"):
        corners = rotated_box(obj)
        assert _is_rectangle(corners, tol=1e-2)
        x0, y0, x1, y1 = obj.box
        assert _inside(corners, ((x0 + x1) / 2, (y0 + y1) / 2))
        ys, xs = np.nonzero(obj.mask)
        poly = corners.reshape(-1, 1, 2)
        assert all(cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= -0.5
                   for x, y in zip(xs + obj.x0 + 0.5, ys + obj.y0 + 0.5))
        if not obj.orientable:
            assert np.array_equal(corners, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _tilt(kind: str, task: str) -> float:
    """Mean box area / rotated-box area: 1 for upright objects, larger the more they are turned."""
    ratios = []
    for obj in _rendered(kind, task):
        corners = rotated_box(obj)
        area = np.linalg.norm(corners[1] - corners[0]) * np.linalg.norm(corners[2] - corners[1])
        ratios.append(obj.mask.size / area)
    return float(np.mean(ratios))


def test_obb_digits_are_drawn_rotated() -> None:
    assert _tilt("digits", "detect") < 1.03 < 1.08 < _tilt("digits", "obb")
    bar = np.zeros((9, 3), dtype=np.float32)
    bar[:, 1] = 1.0
    assert synth._rotate_alpha(bar, 90.0).shape == (1, 9)


def test_digit_polygon_is_the_hull_of_all_blobs() -> None:
    """A stroke can break into separate blobs; the polygon must still cover each of them."""
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[1:4, 1:4] = 1
    mask[7:11, 6:11] = 1
    hull = outline(Placed(7, mask, 20, 30, fragmented=True))
    assert hull.min(axis=0).tolist() == [21.5, 31.5] and hull.max(axis=0).tolist() == [30.5, 40.5]
    largest = outline(Placed(7, mask, 20, 30))
    assert largest.min(axis=0).tolist() == [26.5, 37.5]


# --------------------------------------------------------------------------- ultralytics accepts it


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", LABEL_TASKS)
def test_ultralytics_verifies_every_image_and_label(made, kind: str, task: str) -> None:
    from ultralytics.data.utils import verify_image_label

    root = made(kind, task)
    pose = task == "pose"
    nkpt, ndim = (4, 3) if pose else (0, 0)
    for label in _label_files(root):
        image = root / "images" / label.parent.name / f"{label.stem}.jpg"
        result = verify_image_label((str(image), str(label), "", pose, _nc(kind), nkpt, ndim, False))
        nm, nf, ne, corrupt, msg = result[5:]
        assert (nm, nf, corrupt) == (0, 1, 0), msg
        assert "corrupt" not in msg
        if pose:
            assert result[4].shape[1:] == (4, 3)


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_check_det_dataset_loads_label_tasks(made, task: str) -> None:
    from ultralytics.data.utils import check_det_dataset

    root = made("shapes", task)
    checked = check_det_dataset(str(root / "data.yaml"))
    assert checked["nc"] == 3 and Path(checked["train"]) == root / "images" / "train"
    if task == "pose":
        assert checked["kpt_shape"] == [4, 3] and checked["flip_idx"] == [0, 1, 3, 2]
    else:
        assert "kpt_shape" not in checked


@pytest.mark.parametrize("kind", KINDS)
def test_classify_folders_match_ultralytics_class_order(made, kind: str) -> None:
    from ultralytics.data.utils import check_cls_dataset

    root = made(kind, "classify")
    names = synth.KINDS[kind][0]
    assert list(names) == sorted(names)  # ultralytics derives class ids from sorted folder names
    checked = check_cls_dataset(str(root))
    assert checked["nc"] == len(names)
    assert checked["names"] == dict(enumerate(names))
    for split, count in (("train", TINY["n_train"]), ("val", TINY["n_val"])):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(names)  # empty classes too
        for index in range(count):
            assert (root / split / names[index % len(names)] / f"{index:06d}.jpg").is_file()
        assert len(list((root / split).rglob("*.jpg"))) == count
    spec = yaml.safe_load((root / "data.yaml").read_text())
    assert spec == {"path": str(root), "train": "train", "val": "val", "nc": len(names),
                    "names": dict(enumerate(names)), "task": "classify"}


@pytest.mark.parametrize("kind", KINDS)
def test_classify_draws_one_large_object_of_the_cycling_class(kind: str) -> None:
    render = synth.KINDS[kind][1]
    for index in range(4):
        _, objects = render(synth._image_rng(0, "val", index), SIZE, "val", index, "classify")
        assert [obj.cls for obj in objects] == [index % _nc(kind)]
        x0, y0, x1, y1 = objects[0].box
        assert max(x1 - x0, y1 - y0) >= 0.35 * SIZE and x1 <= SIZE and y1 <= SIZE


# --------------------------------------------------------------------------- same images, determinism, params


@pytest.mark.parametrize("kind", KINDS)
def test_detect_segment_pose_share_identical_images(made, kind: str) -> None:
    images = {task: {p.relative_to(made(kind, task)): p.read_bytes()
                     for p in sorted((made(kind, task) / "images").rglob("*.jpg"))}
              for task in ("detect", "segment", "pose", "obb")}
    assert len(images["detect"]) == TINY["n_train"] + TINY["n_val"]
    assert images["segment"] == images["detect"] and images["pose"] == images["detect"]
    assert (images["obb"] == images["detect"]) == (kind == "shapes")  # only obb digits are drawn rotated


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["segment", "pose", "obb", "classify"])
def test_every_task_is_deterministic(made, tmp_path: Path, kind: str, task: str) -> None:
    first = made(kind, task)
    again = generate_dataset(kind, tmp_path / "again", task=task, **TINY)
    again = again if task == "classify" else again.parent

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "data.yaml"}

    assert files(first) == files(again)


def test_task_recorded_only_when_not_detect(made) -> None:
    detect = json.loads((made("shapes", "detect") / "synth.json").read_text())
    pose = json.loads((made("shapes", "pose") / "synth.json").read_text())
    assert "task" not in detect
    assert pose == {**detect, "task": "pose"}


def test_reuse_is_per_task(made) -> None:
    root = made("shapes", "pose")
    assert generate_dataset("shapes", root, task="pose", **TINY) == root / "data.yaml"
    assert generate_dataset("shapes", made("shapes", "classify"), task="classify", **TINY) == made("shapes", "classify")
    with pytest.raises(UserError, match="already exists"):
        generate_dataset("shapes", root, task="segment", **TINY)
    with pytest.raises(UserError, match="already exists"):
        generate_dataset("shapes", made("shapes", "detect"), task="obb", **TINY)


def test_unknown_task_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="detect, segment, pose, obb, classify") as err:
        generate_dataset("shapes", tmp_path / "ds", task="depth", **TINY)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_writes_a_pose_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from yoloslim.cli import main
    from yoloslim.commands import synth as command

    assert command.TASKS == synth.TASKS
    out = tmp_path / "pose"
    code = main(["synth", "--kind", "shapes", "--task", "pose", "--out", str(out),
                 "--train", "2", "--val", "1", "--imgsz", "64"])
    assert code == 0
    assert str(out / "data.yaml") in capsys.readouterr().out
    assert yaml.safe_load((out / "data.yaml").read_text())["kpt_shape"] == [4, 3]
    assert len(list((out / "labels").rglob("*.txt"))) == 3
