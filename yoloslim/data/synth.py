"""Synthetic YOLO-format detection datasets that need no download.

Two kinds exist because they serve different purposes:

* ``shapes`` — three flat-coloured shapes on contrasting backgrounds; a tiny model
  learns it in a few epochs, so tests can check that training actually works.
* ``digits`` — real handwritten digits (bundled with scikit-learn) pasted at many
  scales onto crops of real photos; hard enough that model capacity shows up in
  mAP, which is what pruning/distillation benchmarks need.

Every image is drawn from its own random generator seeded by ``(seed, split, index)``,
so the output is reproducible and independent of generation order.
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

from yoloslim.errors import UserError

GENERATOR_VERSION = 1
SPLITS = ("train", "val")
JPEG_QUALITY = 95

SHAPE_NAMES = ("circle", "square", "triangle")
SHAPE_MAX_IOU = 0.3
SHAPE_TRIES = 5

DIGIT_NAMES = tuple(str(d) for d in range(10))
DIGIT_MAX_IOU = 0.35
DIGIT_TRIES = 10
DIGIT_MIN_PX = 8  # below the source 8x8 resolution strokes would vanish when resized
DIGIT_ALPHA_BOX = 0.25
LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive
Labelled = tuple[np.ndarray, list[tuple[int, Box]]]


def generate_dataset(
    kind: str,
    out: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    imgsz: int = 320,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Write a synthetic YOLO dataset to ``out`` and return the absolute ``data.yaml`` path.

    A folder already produced with identical parameters is reused untouched, which
    makes this cheap to call from demos and benchmarks. Output appears atomically:
    it is built in a hidden sibling folder and renamed into place at the end.
    """
    _validate(kind, n_train, n_val, imgsz, seed)
    out = Path(out).expanduser().resolve()
    params = {"version": GENERATOR_VERSION, "kind": kind, "n_train": n_train,
              "n_val": n_val, "imgsz": imgsz, "seed": seed}
    cached = _reuse_existing(out, params)
    if cached is not None:
        return cached
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build(tmp, out, params, show_progress)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "data.yaml"


def _validate(kind: str, n_train: int, n_val: int, imgsz: int, seed: int) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown synthetic dataset kind {kind!r} — choose one of: {', '.join(KINDS)}")
    if n_train < 1 or n_val < 1:
        raise UserError(f"need at least 1 train and 1 val image (got n_train={n_train}, n_val={n_val})")
    if imgsz < 32:
        raise UserError(f"imgsz must be at least 32 pixels (got {imgsz})")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer (got {seed})")


def _reuse_existing(out: Path, params: dict) -> Path | None:
    """Return the cached data.yaml, None if ``out`` is free, or refuse to clobber other data."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    meta, data_yaml = out / "synth.json", out / "data.yaml"
    if meta.is_file() and data_yaml.is_file():
        try:
            same = json.loads(meta.read_text()) == params
        except (OSError, ValueError):
            same = False
        if same:
            return data_yaml
    raise UserError(f"output folder {out} already exists with other content — choose another --out or delete it")


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir():
        out.rmdir()  # only reached when empty; _reuse_existing refused anything else
    os.replace(tmp, out)


def _build(tmp: Path, final: Path, params: dict, show_progress: bool) -> None:
    kind, imgsz, seed = params["kind"], params["imgsz"], params["seed"]
    names, render = KINDS[kind]
    counts = {"train": params["n_train"], "val": params["n_val"]}
    with tqdm(total=sum(counts.values()), desc=f"synth {kind}", unit="img", disable=not show_progress) as bar:
        for split, count in counts.items():
            img_dir, lbl_dir = tmp / "images" / split, tmp / "labels" / split
            img_dir.mkdir(parents=True)
            lbl_dir.mkdir(parents=True)
            for index in range(count):
                rng = _image_rng(seed, split, index)
                image, objects = render(rng, imgsz, split, index)
                _write_sample(img_dir / f"{index:06d}.jpg", lbl_dir / f"{index:06d}.txt", image, objects)
                bar.update()
    _write_data_yaml(tmp / "data.yaml", final, names)
    (tmp / "synth.json").write_text(json.dumps(params, indent=2) + "\n")


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One generator per image so any image can be regenerated on its own."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _write_sample(img_path: Path, lbl_path: Path, image: np.ndarray, objects: list[tuple[int, Box]]) -> None:
    if not cv2.imwrite(str(img_path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"could not write image {img_path}")
    size = image.shape[0]
    lines = [_label_line(cls, box, size) for cls, box in objects]
    lbl_path.write_text("".join(line + "\n" for line in lines))


def _label_line(cls: int, box: Box, size: int) -> str:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size
    w, h = (x1 - x0) / size, (y1 - y0) / size
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _write_data_yaml(path: Path, final: Path, names: tuple[str, ...]) -> None:
    data = {"path": str(final), "train": "images/train", "val": "images/val",
            "nc": len(names), "names": dict(enumerate(names))}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _fits(box: Box, placed: list[tuple[int, Box]], max_iou: float) -> bool:
    return all(_iou(box, other) <= max_iou for _, other in placed)


def _hsv_to_bgr(h: float, s: float, v: float) -> tuple[int, int, int]:
    """OpenCV's 8-bit HSV (hue 0..179) is the easiest way to ask for 'saturated' or 'dark'."""
    pixel = np.array([[[h, s, v]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0])


# --------------------------------------------------------------------------- shapes


def _render_shapes(rng: np.random.Generator, imgsz: int, split: str, index: int) -> Labelled:
    """Dark background with bright shapes, or light background with mid-tone shapes."""
    dark = rng.random() < 0.5
    bg_v, fg_v = ((0, 70), (190, 255)) if dark else ((190, 255), (90, 170))
    image = _shape_background(rng, imgsz, bg_v)
    placed: list[tuple[int, Box]] = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(SHAPE_NAMES)))
        colour = _hsv_to_bgr(rng.integers(180), rng.integers(200, 256), rng.integers(*fg_v, endpoint=True))
        for _ in range(SHAPE_TRIES):
            mask = _shape_mask(rng, imgsz, cls)
            x, y, w, h = cv2.boundingRect(mask)
            box = (x, y, x + w, y + h)
            if _fits(box, placed, SHAPE_MAX_IOU):
                image[y:y + h, x:x + w][mask[y:y + h, x:x + w] > 0] = colour
                placed.append((cls, box))
                break
    return image, placed


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


def _shape_mask(rng: np.random.Generator, imgsz: int, cls: int) -> np.ndarray:
    """Filled shape whose circumscribing circle spans 15-45% of the image and lies inside it."""
    radius = rng.uniform(0.15, 0.45) * imgsz / 2
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


def _render_digits(rng: np.random.Generator, imgsz: int, split: str, index: int) -> Labelled:
    """3-10 digits at log-uniform scales; the first digit's class cycles with ``index`` so
    every split with at least ten images contains all ten classes."""
    pools = _digit_pools(split)
    image = _photo_background(rng, imgsz)
    placed: list[tuple[int, Box]] = []
    for slot in range(int(rng.integers(3, 11))):
        cls = index % 10 if slot == 0 else int(rng.integers(10))
        alpha = _digit_alpha(rng, pools[cls], imgsz)
        h, w = alpha.shape
        for _ in range(DIGIT_TRIES):
            x0, y0 = int(rng.integers(imgsz - w + 1)), int(rng.integers(imgsz - h + 1))
            box = (x0, y0, x0 + w, y0 + h)
            if _fits(box, placed, DIGIT_MAX_IOU):
                _blend(rng, image, alpha, x0, y0)
                placed.append((cls, box))
                break
    return image, placed


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


def _digit_alpha(rng: np.random.Generator, pool: np.ndarray, imgsz: int) -> np.ndarray:
    """Upscaled digit cropped to where alpha exceeds the box threshold, so its extent *is* the box."""
    digit = pool[int(rng.integers(len(pool)))]
    height = max(DIGIT_MIN_PX, round(np.exp(rng.uniform(np.log(0.04), np.log(0.30))) * imgsz))
    width = max(DIGIT_MIN_PX, round(height * rng.uniform(0.8, 1.2)))
    alpha = cv2.resize(digit, (width, height), interpolation=cv2.INTER_LINEAR)
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


KINDS: dict[str, tuple[tuple[str, ...], Callable[[np.random.Generator, int, str, int], Labelled]]] = {
    "shapes": (SHAPE_NAMES, _render_shapes),
    "digits": (DIGIT_NAMES, _render_digits),
}
