"""Synthetic YOLO-format datasets that need no download, for every ultralytics task.

Two kinds exist because they serve different purposes:

* ``shapes`` — three flat-coloured shapes on contrasting backgrounds; a tiny model
  learns it in a few epochs, so tests can check that training actually works.
* ``digits`` — real handwritten digits (bundled with scikit-learn) pasted at many
  scales onto crops of real photos; hard enough that model capacity shows up in
  mAP, which is what pruning/distillation benchmarks need.

Every image is drawn from its own random generator seeded by ``(seed, split, index)``,
so the output is reproducible and independent of generation order.

Renderers return each object with its pixel mask; :mod:`yoloslim.data.labels` turns that
one mask into a box (detect), polygon (segment), four keypoints (pose) or rotated box (obb).
detect, segment and pose share the very same images. obb rotates the digits (shapes are
rotated already) and classify draws a single large object per image, filed by class.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from yoloslim.data.labels import Box, Placed, label_line, pose_yaml
from yoloslim.errors import UserError

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
TASKS = ("detect", "segment", "pose", "obb", "classify")
JPEG_QUALITY = 95

SHAPE_NAMES = ("circle", "square", "triangle")
SHAPE_MAX_IOU = 0.3
SHAPE_TRIES = 5
SHAPE_DIAMETER = (0.15, 0.45)  # circumscribing circle, as a fraction of the image side
CLASSIFY_SHAPE_DIAMETER = (0.60, 0.90)

DIGIT_NAMES = tuple(str(d) for d in range(10))
DIGIT_MAX_IOU = 0.35
DIGIT_TRIES = 10
DIGIT_MIN_PX = 8  # below the source 8x8 resolution strokes would vanish when resized
DIGIT_ALPHA_BOX = 0.25
DIGIT_HEIGHT = (0.04, 0.30)  # fraction of the image side, drawn log-uniformly
CLASSIFY_DIGIT_HEIGHT = (0.40, 0.80)
DIGIT_MAX_ANGLE = 60.0  # degrees; past +-90 a rotated 6 and a rotated 9 look alike
LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)

Labelled = tuple[np.ndarray, list[Placed]]


def generate_dataset(
    kind: str,
    out: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    imgsz: int = 320,
    seed: int = 0,
    show_progress: bool = True,
    task: str = "detect",
) -> Path:
    """Write a synthetic dataset for ``task`` to ``out`` and return what ultralytics takes as ``data``.

    That is the absolute ``data.yaml`` path, except for ``classify`` whose trainer wants the
    dataset folder (``train/<class>/*.jpg``). A folder already produced with identical
    parameters is reused untouched, which makes this cheap to call from demos and benchmarks.
    Output appears atomically: it is built in a hidden sibling folder and renamed into place.
    """
    _validate(kind, n_train, n_val, imgsz, seed, task)
    out = Path(out).expanduser().resolve()
    params = {"version": GENERATOR_VERSION, "kind": kind, "n_train": n_train,
              "n_val": n_val, "imgsz": imgsz, "seed": seed}
    if task != "detect":  # detect folders written before tasks existed must still be reused
        params["task"] = task
    result = out if task == "classify" else out / "data.yaml"
    if _reuse_existing(out, params):
        return result
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build(tmp, out, params, show_progress)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _validate(kind: str, n_train: int, n_val: int, imgsz: int, seed: int, task: str) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown synthetic dataset kind {kind!r} — choose one of: {', '.join(KINDS)}")
    if task not in TASKS:
        raise UserError(f"unknown task {task!r} — choose one of: {', '.join(TASKS)}")
    if n_train < 1 or n_val < 1:
        raise UserError(f"need at least 1 train and 1 val image (got n_train={n_train}, n_val={n_val})")
    if imgsz < 32:
        raise UserError(f"imgsz must be at least 32 pixels (got {imgsz})")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer (got {seed})")


def _reuse_existing(out: Path, params: dict) -> bool:
    """True if ``out`` holds this very dataset, False if it is free; refuse to clobber other data."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    meta, data_yaml = out / "synth.json", out / "data.yaml"
    if meta.is_file() and data_yaml.is_file():
        try:
            same = json.loads(meta.read_text()) == params
        except (OSError, ValueError):
            same = False
        if same:
            return True
    raise UserError(f"output folder {out} already exists with other content — choose another --out or delete it")


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir():
        out.rmdir()  # only reached when empty; _reuse_existing refused anything else
    os.replace(tmp, out)


def _build(tmp: Path, final: Path, params: dict, show_progress: bool) -> None:
    kind, imgsz, seed = params["kind"], params["imgsz"], params["seed"]
    task = params.get("task", "detect")
    names, render = KINDS[kind]
    counts = {"train": params["n_train"], "val": params["n_val"]}
    desc = f"synth {kind}" if task == "detect" else f"synth {kind} {task}"
    with tqdm(total=sum(counts.values()), desc=desc, unit="img", disable=not show_progress) as bar:
        for split, count in counts.items():
            _make_split_dirs(tmp, split, task, names)
            for index in range(count):
                rng = _image_rng(seed, split, index)
                image, objects = render(rng, imgsz, split, index, task)
                _write_sample(tmp, split, index, task, names, image, objects)
                bar.update()
    _write_data_yaml(tmp / "data.yaml", final, names, task)
    (tmp / "synth.json").write_text(json.dumps(params, indent=2) + "\n")


def _make_split_dirs(root: Path, split: str, task: str, names: tuple[str, ...]) -> None:
    """Every class gets its folder even when empty: ultralytics reads the class list from them."""
    if task == "classify":
        for name in names:
            (root / split / name).mkdir(parents=True)
    else:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One generator per image so any image can be regenerated on its own."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _write_sample(root: Path, split: str, index: int, task: str, names: tuple[str, ...],
                  image: np.ndarray, objects: list[Placed]) -> None:
    """classify files the image under its (single) object's class; other tasks pair it with a label file."""
    stem = f"{index:06d}"
    if task == "classify":
        _write_image(root / split / names[objects[0].cls] / f"{stem}.jpg", image)
        return
    _write_image(root / "images" / split / f"{stem}.jpg", image)
    lines = [label_line(task, obj, image.shape[0]) for obj in objects]
    (root / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))


def _write_image(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"could not write image {path}")


def _write_data_yaml(path: Path, final: Path, names: tuple[str, ...], task: str) -> None:
    data = {"path": str(final), "train": "images/train", "val": "images/val",
            "nc": len(names), "names": dict(enumerate(names))}
    if task == "classify":
        data.update(train="train", val="val", task="classify")
    elif task == "pose":
        data.update(pose_yaml(len(names)))
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _fits(box: Box, placed: list[Placed], max_iou: float) -> bool:
    return all(_iou(box, other.box) <= max_iou for other in placed)


def _hsv_to_bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    """OpenCV's 8-bit HSV (hue 0..179) is the easiest way to ask for 'saturated' or 'dark'."""
    pixel = np.array([[[h, s, v]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0])


# --------------------------------------------------------------------------- shapes


def _render_shapes(rng: np.random.Generator, imgsz: int, split: str, index: int, task: str) -> Labelled:
    """Dark background with bright shapes, or light background with mid-tone shapes.

    classify draws one large shape of class ``index % 3``; every other task gets the same
    1-4 shapes (already randomly rotated, so obb needs nothing extra).
    """
    dark = rng.random() < 0.5
    bg_v, fg_v = ((0, 70), (190, 255)) if dark else ((190, 255), (90, 170))
    image = _shape_background(rng, imgsz, bg_v)
    if task == "classify":
        cls = index % len(SHAPE_NAMES)
        colour = _shape_colour(rng, fg_v)
        shape = _shape(rng, imgsz, cls, CLASSIFY_SHAPE_DIAMETER)
        _paint(image, shape, colour)
        return image, [shape]
    placed: list[Placed] = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(SHAPE_NAMES)))
        colour = _shape_colour(rng, fg_v)
        for _ in range(SHAPE_TRIES):
            shape = _shape(rng, imgsz, cls, SHAPE_DIAMETER)
            if _fits(shape.box, placed, SHAPE_MAX_IOU):
                _paint(image, shape, colour)
                placed.append(shape)
                break
    return image, placed


def _shape_colour(rng: np.random.Generator, v_range: tuple[int, int]) -> tuple[int, int, int]:
    return _hsv_to_bgr(rng.integers(180), rng.integers(200, 256), rng.integers(*v_range, endpoint=True))


def _paint(image: np.ndarray, obj: Placed, colour: tuple[int, int, int]) -> None:
    h, w = obj.mask.shape
    image[obj.y0:obj.y0 + h, obj.x0:obj.x0 + w][obj.mask > 0] = colour


def _shape(rng: np.random.Generator, imgsz: int, cls: int, diameter: tuple[float, float]) -> Placed:
    """A random shape of class ``cls``, its mask cropped to its bounding rectangle."""
    mask = _shape_mask(rng, imgsz, cls, diameter)
    x, y, w, h = cv2.boundingRect(mask)
    return Placed(cls, mask[y:y + h, x:x + w], x, y, orientable=SHAPE_NAMES[cls] != "circle")


def _shape_background(rng: np.random.Generator, imgsz: int, v_range: tuple[int, int]) -> np.ndarray:
    """Low-saturation colour in the given brightness band, half the time as a linear gradient."""
    c0, c1 = (np.array(_hsv_to_bgr(rng.integers(180), rng.integers(0, 61), rng.integers(*v_range, endpoint=True)),
                       dtype=np.float32) for _ in range(2))
    image = np.empty((imgsz, imgsz, 3), dtype=np.uint8)
    if rng.random() < 0.5:
        image[:] = c0
        return image
    # A linear ramp is separable into a per-column and a per-row term, so the full image
    # costs a single broadcast add instead of several float passes.
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = np.cos(angle), np.sin(angle)
    ramp = np.linspace(0.0, 1.0, imgsz, dtype=np.float32)[:, None]
    span = abs(dx) + abs(dy)
    cols = c0 + 0.5 + (dx * ramp - min(dx, 0.0)) / span * (c1 - c0)  # +0.5 so truncation rounds
    rows = (dy * ramp - min(dy, 0.0)) / span * (c1 - c0)
    np.add(rows[:, None, :], cols[None, :, :], out=image, casting="unsafe")
    return image


def _shape_mask(rng: np.random.Generator, imgsz: int, cls: int, diameter: tuple[float, float]) -> np.ndarray:
    """Full-image mask of a filled shape whose circumscribing circle lies inside the image and
    spans a ``diameter`` fraction of it."""
    radius = rng.uniform(*diameter) * imgsz / 2
    cx, cy = rng.uniform(radius, imgsz - radius, size=2)
    mask = np.zeros((imgsz, imgsz), dtype=np.uint8)
    if SHAPE_NAMES[cls] == "circle":
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 255, thickness=-1, lineType=cv2.LINE_8)
        return mask
    corners = 4 if SHAPE_NAMES[cls] == "square" else 3
    angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
    if corners == 3:
        angles = angles + rng.uniform(-0.25, 0.25, size=3)  # irregular triangles, still clearly three-cornered
    pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return mask


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=None)
def _digit_pools(split: str) -> tuple[np.ndarray, ...]:
    """Per-class 8x8 digit stacks as alpha in [0,1]; even samples train, odd val, so val is unseen."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    parity = SPLITS.index(split)
    images = digits.images[parity::2].astype(np.float32) / 16.0
    targets = digits.target[parity::2]
    return tuple(images[targets == d] for d in range(10))


@lru_cache(maxsize=None)
def _photos() -> tuple[np.ndarray, ...]:
    """The two photos bundled with scikit-learn, as BGR, used as cluttered backgrounds."""
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(img[:, :, ::-1]) for img in load_sample_images().images)


def _render_digits(rng: np.random.Generator, imgsz: int, split: str, index: int, task: str) -> Labelled:
    """3-10 digits at log-uniform scales; the first digit's class cycles with ``index`` so
    every split with at least ten images contains all ten classes.

    obb turns every digit by a random angle so the orientation is there to learn;
    classify draws a single large digit of class ``index % 10``.
    """
    pools = _digit_pools(split)
    image = _photo_background(rng, imgsz)
    if task == "classify":
        cls = index % 10
        alpha = _digit_alpha(rng, pools[cls], imgsz, CLASSIFY_DIGIT_HEIGHT)
        h, w = alpha.shape
        x0, y0 = int(rng.integers(imgsz - w + 1)), int(rng.integers(imgsz - h + 1))
        _blend(rng, image, alpha, x0, y0)
        return image, [_digit(cls, alpha, x0, y0)]
    placed: list[Placed] = []
    for slot in range(int(rng.integers(3, 11))):
        cls = index % 10 if slot == 0 else int(rng.integers(10))
        alpha = _digit_alpha(rng, pools[cls], imgsz, DIGIT_HEIGHT)
        if task == "obb":
            alpha = _rotate_alpha(alpha, rng.uniform(-DIGIT_MAX_ANGLE, DIGIT_MAX_ANGLE))
        h, w = alpha.shape
        for _ in range(DIGIT_TRIES):
            x0, y0 = int(rng.integers(imgsz - w + 1)), int(rng.integers(imgsz - h + 1))
            if _fits((x0, y0, x0 + w, y0 + h), placed, DIGIT_MAX_IOU):
                _blend(rng, image, alpha, x0, y0)
                placed.append(_digit(cls, alpha, x0, y0))
                break
    return image, placed


def _digit(cls: int, alpha: np.ndarray, x0: int, y0: int) -> Placed:
    """The digit's mask is where its alpha exceeds the box threshold, so mask extent == box."""
    return Placed(cls, (alpha > DIGIT_ALPHA_BOX).astype(np.uint8), x0, y0, fragmented=True)


def _photo_background(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    photos = _photos()
    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.uniform(0.25, 1.0) * min(photo.shape[:2]))
    y0 = int(rng.integers(photo.shape[0] - side + 1))
    x0 = int(rng.integers(photo.shape[1] - side + 1))
    crop = photo[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if side > imgsz else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (imgsz, imgsz), interpolation=interp)


def _digit_alpha(rng: np.random.Generator, pool: np.ndarray, imgsz: int, height: tuple[float, float]) -> np.ndarray:
    """Upscaled digit, log-uniformly ``height`` of the image tall, cropped to its box."""
    digit = pool[int(rng.integers(len(pool)))]
    rows = max(DIGIT_MIN_PX, round(np.exp(rng.uniform(np.log(height[0]), np.log(height[1]))) * imgsz))
    cols = max(DIGIT_MIN_PX, round(rows * rng.uniform(0.8, 1.2)))
    return _crop_to_box(cv2.resize(digit, (cols, rows), interpolation=cv2.INTER_LINEAR))


def _rotate_alpha(alpha: np.ndarray, degrees: float) -> np.ndarray:
    """``alpha`` turned about its centre on a canvas large enough to lose no stroke, cropped to its box."""
    h, w = alpha.shape
    side = int(np.ceil(np.hypot(h, w))) + 2
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = alpha
    turn = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), degrees, 1.0)
    return _crop_to_box(cv2.warpAffine(canvas, turn, (side, side), flags=cv2.INTER_LINEAR))


def _crop_to_box(alpha: np.ndarray) -> np.ndarray:
    """Crop to where alpha exceeds the box threshold, so the crop's extent *is* the box."""
    rows = np.flatnonzero((alpha > DIGIT_ALPHA_BOX).any(axis=1))
    cols = np.flatnonzero((alpha > DIGIT_ALPHA_BOX).any(axis=0))
    return alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _blend(rng: np.random.Generator, image: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Paint a colour through ``alpha``: light ink on dark patches, dark ink on light ones.

    Light ink is kept pale because a saturated red or blue is dark in luminance even at full value.
    """
    h, w = alpha.shape
    patch = image[y0:y0 + h, x0:x0 + w].astype(np.float32)
    if float(patch.mean(axis=(0, 1)) @ LUMA_BGR) > 127:
        colour_hsv = (rng.integers(180), rng.integers(256), rng.integers(0, 61))
    else:
        colour_hsv = (rng.integers(180), rng.integers(0, 121), rng.integers(200, 256))
    colour = np.array(_hsv_to_bgr(*colour_hsv), dtype=np.float32)
    a = alpha[..., None]
    image[y0:y0 + h, x0:x0 + w] = (patch * (1 - a) + colour * a).round().astype(np.uint8)


# Classify reads class names from sorted folder names, so each name tuple must already be sorted.
KINDS: dict[str, tuple[tuple[str, ...], Callable[[np.random.Generator, int, str, int, str], Labelled]]] = {
    "shapes": (SHAPE_NAMES, _render_shapes),
    "digits": (DIGIT_NAMES, _render_digits),
}
