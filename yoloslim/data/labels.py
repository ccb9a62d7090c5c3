"""Ultralytics label lines for one drawn object, for every task that has label files.

Every format is derived from the object's pixel mask, so a box, a polygon, four keypoints
and a rotated box of the same object always agree with each other. Coordinates live in the
frame the detection boxes use: pixel ``i`` spans ``[i, i + 1)``, so points taken from
pixels sit at pixel centres (``index + 0.5``). Labels are amodal: an object partly painted
over by a later one keeps its full outline, exactly as its box always did.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive

KEYPOINT_NAMES = ("top", "bottom", "left", "right")
FLIP_IDX = [0, 1, 3, 2]  # a horizontal flip swaps the left-most and the right-most point
VISIBLE = 2  # ultralytics' keypoint visibility for "labelled and visible"

POLY_EPSILON = 0.5  # px; approxPolyDP tolerance, doubled until the polygon is short enough
POLY_MAX_POINTS = 64
PIXEL_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)


@dataclass(frozen=True)
class Placed:
    """One drawn object: its class and a uint8 mask crop placed at ``(x0, y0)``.

    The crop is exactly as large as the object's extent, so its rectangle *is* the box.
    ``fragmented`` marks masks that may fall apart into several blobs (thin digit strokes);
    ``orientable`` is False for shapes without a direction (circles).
    """

    cls: int
    mask: np.ndarray
    x0: int
    y0: int
    fragmented: bool = False
    orientable: bool = True

    @property
    def box(self) -> Box:
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h


def label_line(task: str, obj: Placed, size: int) -> str:
    """The label line of ``obj`` in an image of ``size`` x ``size`` pixels for ``task``."""
    return _FORMATS[task](obj, size)


def pose_yaml(nc: int) -> dict:
    """data.yaml keys ultralytics needs for pose: shape, flip permutation and keypoint names."""
    return {"kpt_shape": [len(KEYPOINT_NAMES), 3], "flip_idx": list(FLIP_IDX),
            "kpt_names": {cls: list(KEYPOINT_NAMES) for cls in range(nc)}}


def outline(obj: Placed) -> np.ndarray:
    """Polygon (N >= 3, xy pixels) around the object, at most ``POLY_MAX_POINTS`` long.

    Solid shapes use their largest external contour. Digit masks can split into several
    stroke blobs, and any single contour would leave some of them out, so they use the
    convex hull of all mask pixels instead: it always covers the whole digit.
    """
    contours = _contours(obj.mask)
    if obj.fragmented:
        curve = cv2.convexHull(np.concatenate(contours))
    else:
        curve = max(contours, key=cv2.contourArea)
    poly = _simplify(curve)
    if len(poly) < 3:  # a mask one pixel thin has no area to outline: use its box instead
        return _box_corners(obj)
    return poly + np.float32(0.5) + np.array([obj.x0, obj.y0], dtype=np.float32)


def extremes(obj: Placed) -> np.ndarray:
    """Top-, bottom-, left- and right-most mask pixel centres, shape (4, 2).

    Ties (a flat edge) resolve to the middle pixel of the tied ones, so an upright square
    gets the midpoints of its sides and the point is always on the object.
    """
    ys, xs = np.nonzero(obj.mask)
    top, bottom = (_middle(xs, ys == ys.min()), ys.min()), (_middle(xs, ys == ys.max()), ys.max())
    left, right = (xs.min(), _middle(ys, xs == xs.min())), (xs.max(), _middle(ys, xs == xs.max()))
    xy = np.array([top, bottom, left, right], dtype=np.float32)
    return xy + np.float32(0.5) + np.array([obj.x0, obj.y0], dtype=np.float32)


def rotated_box(obj: Placed) -> np.ndarray:
    """Four corners (xy pixels) of the smallest rotated rectangle covering the mask's pixels.

    Circles have no orientation, so any angle would be label noise: they get their box.
    """
    if not obj.orientable:
        return _box_corners(obj)
    # Fitting the corners of the boundary pixels (not their centres) makes an upright
    # square's rectangle coincide with its box.
    boundary = np.concatenate(_contours(obj.mask)).reshape(-1, 1, 2).astype(np.float32)
    corners = (boundary + PIXEL_CORNERS[None]).reshape(-1, 2)
    return cv2.boxPoints(cv2.minAreaRect(corners)) + np.array([obj.x0, obj.y0], dtype=np.float32)


def _box_corners(obj: Placed) -> np.ndarray:
    x0, y0, x1, y1 = obj.box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _middle(values: np.ndarray, tied: np.ndarray) -> int:
    """Median of ``values`` where ``tied`` holds: always one of the tied pixels, unlike the mean."""
    chosen = np.sort(values[tied])
    return int(chosen[len(chosen) // 2])


def _contours(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    return cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]


def _simplify(curve: np.ndarray) -> np.ndarray:
    """Drop near-collinear points; a sub-pixel tolerance keeps the outline on the mask edge."""
    epsilon = POLY_EPSILON
    poly = cv2.approxPolyDP(curve, epsilon, closed=True)
    while len(poly) > POLY_MAX_POINTS:
        epsilon *= 2
        poly = cv2.approxPolyDP(curve, epsilon, closed=True)
    return poly.reshape(-1, 2).astype(np.float32)


def _coords(points: np.ndarray, size: int) -> str:
    """Flat ``x y x y ...`` normalised by the image side."""
    return " ".join(f"{v:.6f}" for v in (np.asarray(points, dtype=np.float64) / size).ravel())


def _box_line(obj: Placed, size: int) -> str:
    x0, y0, x1, y1 = obj.box
    cx, cy = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size
    w, h = (x1 - x0) / size, (y1 - y0) / size
    return f"{obj.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _segment_line(obj: Placed, size: int) -> str:
    return f"{obj.cls} {_coords(outline(obj), size)}"


def _pose_line(obj: Placed, size: int) -> str:
    points = np.asarray(extremes(obj), dtype=np.float64) / size
    kpts = " ".join(f"{x:.6f} {y:.6f} {VISIBLE}" for x, y in points)
    return f"{_box_line(obj, size)} {kpts}"


def _obb_line(obj: Placed, size: int) -> str:
    """Corners are clipped to the image, as ultralytics requires; a rectangle poking out of
    the image (a triangle's or a digit's near the border) then loses its overhang."""
    return f"{obj.cls} {_coords(np.clip(rotated_box(obj), 0, size), size)}"


_FORMATS = {"detect": _box_line, "segment": _segment_line, "pose": _pose_line, "obb": _obb_line}
