"""Synthetic datasets must be valid YOLO data, reproducible, and safe to regenerate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yoloslim.data import generate_dataset
from yoloslim.errors import UserError

SMALL = {"n_train": 20, "n_val": 8, "imgsz": 64, "show_progress": False}


def _labels(root: Path) -> dict[str, bytes]:
    """All label files keyed by relative path, as raw bytes for exact comparison."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*.txt"))}


def _classes(root: Path) -> set[int]:
    return {int(line.split()[0]) for text in _labels(root).values() for line in text.decode().splitlines()}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared ~60-image digits set: generating it once keeps the suite fast."""
    out = tmp_path_factory.mktemp("synth") / "digits"
    return generate_dataset("digits", out, n_train=48, n_val=12, imgsz=96, show_progress=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "shapes"
    return generate_dataset("shapes", out, n_train=30, n_val=10, imgsz=96, show_progress=False)


@pytest.mark.parametrize("kind", ["shapes", "digits"])
def test_same_seed_same_labels_different_seed_differs(tmp_path: Path, kind: str) -> None:
    a = generate_dataset(kind, tmp_path / "a", seed=3, **SMALL).parent
    b = generate_dataset(kind, tmp_path / "b", seed=3, **SMALL).parent
    c = generate_dataset(kind, tmp_path / "c", seed=4, **SMALL).parent
    assert _labels(a) == _labels(b)
    images = sorted((a / "images").rglob("*.jpg"))
    assert len(images) == SMALL["n_train"] + SMALL["n_val"]
    assert all(p.read_bytes() == (b / p.relative_to(a)).read_bytes() for p in images)
    assert _labels(a) != _labels(c)


@pytest.mark.parametrize("dataset", ["shapes", "digits"])
def test_label_lines_are_valid_yolo_boxes(dataset: str, request: pytest.FixtureRequest) -> None:
    data_yaml: Path = request.getfixturevalue(dataset)
    nc = yaml.safe_load(data_yaml.read_text())["nc"]
    lines = [ln for text in _labels(data_yaml.parent).values() for ln in text.decode().splitlines()]
    assert lines
    for line in lines:
        fields = line.split()
        assert len(fields) == 5, line
        cls, (cx, cy, w, h) = int(fields[0]), map(float, fields[1:])
        assert 0 <= cls < nc
        assert w > 0 and h > 0
        for centre, size in ((cx, w), (cy, h)):
            assert -1e-6 <= centre - size / 2 and centre + size / 2 <= 1 + 1e-6, line


def test_every_class_appears(digits: Path, shapes: Path) -> None:
    assert _classes(digits.parent) == set(range(10))
    assert _classes(shapes.parent) == {0, 1, 2}


def test_data_yaml_is_absolute_and_accepted_by_ultralytics(digits: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    assert digits.is_absolute()
    spec = yaml.safe_load(digits.read_text())
    assert Path(spec["path"]).is_absolute() and Path(spec["path"]) == digits.parent
    assert spec["names"] == {i: str(i) for i in range(10)}
    checked = check_det_dataset(str(digits))
    assert checked["nc"] == 10
    assert Path(checked["train"]) == digits.parent / "images" / "train"
    assert Path(checked["val"]) == digits.parent / "images" / "val"


def test_metadata_records_parameters(shapes: Path) -> None:
    meta = json.loads((shapes.parent / "synth.json").read_text())
    assert meta["kind"] == "shapes" and meta["n_train"] == 30 and meta["n_val"] == 10
    assert meta["imgsz"] == 96 and meta["seed"] == 0 and isinstance(meta["version"], int)


def test_same_parameters_reuse_existing_output(tmp_path: Path) -> None:
    first = generate_dataset("shapes", tmp_path / "ds", **SMALL)
    mtimes = {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")}
    again = generate_dataset("shapes", tmp_path / "ds", **SMALL)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")} == mtimes


def test_refuses_to_overwrite_other_content(tmp_path: Path) -> None:
    generate_dataset("shapes", tmp_path / "ds", **SMALL)
    with pytest.raises(UserError, match="already exists"):
        generate_dataset("shapes", tmp_path / "ds", seed=1, **SMALL)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="--out"):
        generate_dataset("shapes", tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert generate_dataset("shapes", tmp_path / "empty", **SMALL).is_file()


def test_no_temporary_folder_left_behind_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yoloslim.data.synth as synth

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(synth, "_write_data_yaml", broken)
    with pytest.raises(RuntimeError):
        generate_dataset("shapes", tmp_path / "ds", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "mnist"}, "shapes, digits"),
        ({"n_train": 0}, "n_train=0"),
        ({"n_val": 0}, "n_val=0"),
        ({"imgsz": 16}, "imgsz"),
    ],
)
def test_bad_arguments_raise_user_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"kind": "shapes", "out": tmp_path / "ds", **SMALL, **kwargs}
    with pytest.raises(UserError, match=message):
        generate_dataset(**args)
    assert not (tmp_path / "ds").exists()
