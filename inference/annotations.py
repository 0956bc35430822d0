"""The reader's marks on a film and what they measure, without Qt (the viewer draws, exports burn in).

Every annotation is a kind plus points in *image* pixel coordinates ``(x, y)`` (x to the right
along a row, y down a column; pixel ``[r, c]`` covers ``c <= x < c + 1``, ``r <= y < r + 1``),
so it stays on the anatomy whatever the view's zoom, rotation or flip. Measurements use the
file's spacing: Pixel Spacing in mm; Imager Pixel Spacing in mm *at the detector* (a projection
radiograph magnifies, so the label says so); pixels when the file has neither.

Kinds and their points:

=========  =======  ==========================================================
kind       points   measures
=========  =======  ==========================================================
distance   2        length
angle      3        the angle at the middle point
cobb       4        the angle between line 0-1 and line 2-3 (0-90 degrees)
rect       2        opposite corners; mean, SD, min, max, area of the pixels
ellipse    2        its bounding box's corners; the same statistics
arrow      2        tail, head (points at something; optional text)
text       1        where the text sits
ctr        4        cardiac width (0-1) and inner thoracic width (2-3): ratio
=========  =======  ==========================================================
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inference.image import ImageMeta

__all__ = [
    "KINDS",
    "AP_CTR_NOTE",
    "PLAUSIBLE_CTR",
    "Annotation",
    "Measurement",
    "Spacing",
    "spacing_of",
    "measure",
    "roi_mask",
    "roi_stats",
    "angle_at",
    "cobb_angle",
    "propose_ctr",
    "annotations_to_json",
    "annotations_from_json",
]

Point = tuple[float, float]
KINDS = {"distance": 2, "angle": 3, "cobb": 4, "rect": 2, "ellipse": 2, "arrow": 2, "text": 1, "ctr": 4}
AP_CTR_NOTE = "AP film: CTR overestimates heart size"
# A proposed cardiac/thoracic width outside this range is not a heart the lung masks found.
PLAUSIBLE_CTR = (0.3, 0.85)
_MAX_TEXT = 500


@dataclass(frozen=True)
class Annotation:
    kind: str
    points: tuple[Point, ...]
    text: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown annotation kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if len(self.points) != KINDS[self.kind]:
            raise ValueError(f"a {self.kind} has {KINDS[self.kind]} points, not {len(self.points)}")
        pts = tuple((float(x), float(y)) for x, y in self.points)
        if not all(math.isfinite(v) for p in pts for v in p):
            raise ValueError("annotation points must be finite numbers")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "text", str(self.text)[:_MAX_TEXT])

    def moved(self, dx: float, dy: float) -> Annotation:
        return replace(self, points=tuple((x + dx, y + dy) for x, y in self.points))

    def with_point(self, index: int, point: Point) -> Annotation:
        pts = list(self.points)
        pts[index] = (float(point[0]), float(point[1]))
        return replace(self, points=tuple(pts))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "points": [[x, y] for x, y in self.points]}
        if self.text:
            out["text"] = self.text
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Annotation:
        if not isinstance(data, dict):
            raise ValueError("an annotation must be a JSON object")
        points = data.get("points")
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            raise ValueError("annotation points must be a list of [x, y] pairs")
        return cls(
            kind=str(data.get("kind", "")),
            points=tuple((float(x), float(y)) for x, y in points),
            text=str(data.get("text", "")),
            id=str(data.get("id") or uuid.uuid4().hex[:12])[:64],
        )


@dataclass(frozen=True)
class Spacing:
    """Millimetres per pixel along a column (between rows) and along a row (between columns)."""

    row_mm: float | None
    col_mm: float | None
    unit: str  # "mm", "mm at detector" or "px"

    @property
    def known(self) -> bool:
        return self.row_mm is not None and self.col_mm is not None

    def length(self, dx: float, dy: float) -> float:
        if not self.known:
            return math.hypot(dx, dy)
        return math.hypot(dx * self.col_mm, dy * self.row_mm)

    @property
    def area_unit(self) -> str:
        return "px²" if not self.known else ("mm² at detector" if "detector" in self.unit else "mm²")

    @property
    def pixel_area(self) -> float:
        return self.row_mm * self.col_mm if self.known else 1.0


def spacing_of(meta: ImageMeta) -> Spacing:
    if meta.pixel_spacing is None:
        return Spacing(None, None, "px")
    row, col = meta.pixel_spacing
    at_detector = meta.spacing_source == "ImagerPixelSpacing"
    return Spacing(float(row), float(col), "mm at detector" if at_detector else "mm")


@dataclass(frozen=True)
class Measurement:
    """What an annotation measures, as the screen, the PDF table and the structured report show it."""

    label: str  # "Distance", "Angle", "Cobb angle", "ROI", "CTR"
    values: dict[str, float]  # name -> value ("length", "angle", "mean", "sd", "min", "max", "area", "ratio"...)
    units: dict[str, str]  # name -> unit ("mm", "mm at detector", "px", "deg", "mm²", "" for a ratio)
    note: str = ""

    def text(self) -> str:
        """``20.0 mm``; ``mean 101.3, sd 4.2, ..., area 12.0 mm²``; a note in brackets."""

        def shown(name: str, value: float) -> str:
            unit = self.units.get(name, "")
            number = f"{value:.2f}" if name == "ratio" else f"{value:.1f}"
            return f"{number} {unit}".strip()

        if len(self.values) == 1:
            text = shown(*next(iter(self.values.items())))
        else:
            text = ", ".join(f"{name} {shown(name, value)}" for name, value in self.values.items())
        return f"{text} ({self.note})" if self.note else text


def angle_at(a: Point, vertex: Point, b: Point) -> float:
    """The angle a-vertex-b in degrees (0-180)."""
    v1 = (a[0] - vertex[0], a[1] - vertex[1])
    v2 = (b[0] - vertex[0], b[1] - vertex[1])
    n = math.hypot(*v1) * math.hypot(*v2)
    if n == 0:
        return 0.0
    cos = max(-1.0, min(1.0, (v1[0] * v2[0] + v1[1] * v2[1]) / n))
    return math.degrees(math.acos(cos))


def cobb_angle(p0: Point, p1: Point, p2: Point, p3: Point) -> float:
    """The acute angle between line p0-p1 and line p2-p3 (degrees, 0-90)."""
    a1 = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    a2 = math.atan2(p3[1] - p2[1], p3[0] - p2[0])
    d = abs(math.degrees(a1 - a2)) % 180.0
    return min(d, 180.0 - d)


def roi_mask(kind: str, p0: Point, p1: Point, shape: tuple[int, int]) -> tuple[slice, slice, np.ndarray]:
    """The pixels whose centres lie in the rectangle or ellipse spanned by corners p0, p1.

    Returns the bounding slices into the image and the boolean mask over that window.
    """
    h, w = shape
    x0, x1 = sorted((p0[0], p1[0]))
    y0, y1 = sorted((p0[1], p1[1]))
    c0, c1 = max(0, math.ceil(x0 - 0.5)), min(w, math.floor(x1 - 0.5) + 1)
    r0, r1 = max(0, math.ceil(y0 - 0.5)), min(h, math.floor(y1 - 0.5) + 1)
    rows, cols = slice(r0, max(r0, r1)), slice(c0, max(c0, c1))
    yy, xx = np.mgrid[rows, cols]
    if kind == "ellipse":
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        if rx <= 0 or ry <= 0:
            return rows, cols, np.zeros(yy.shape, bool)
        mask = ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0
    else:
        mask = np.ones(yy.shape, bool)
    return rows, cols, mask


def roi_stats(pixels: np.ndarray, kind: str, p0: Point, p1: Point, spacing: Spacing) -> Measurement:
    """Mean, SD (sample), min, max and area of the stored pixel values inside a rectangle or ellipse."""
    rows, cols, mask = roi_mask(kind, p0, p1, pixels.shape[:2])
    values = np.asarray(pixels[rows, cols], np.float64)[mask]
    n = int(values.size)
    if n == 0:
        stats = {"mean": float("nan"), "sd": float("nan"), "min": float("nan"), "max": float("nan")}
    else:
        sd = float(values.std(ddof=1)) if n > 1 else 0.0
        stats = {"mean": float(values.mean()), "sd": sd, "min": float(values.min()), "max": float(values.max())}
    stats["area"] = n * spacing.pixel_area
    units = {"mean": "", "sd": "", "min": "", "max": "", "area": spacing.area_unit}
    return Measurement("ROI", stats, units, note=f"{n} pixels")


def propose_ctr(visible: np.ndarray, whole: np.ndarray | None = None) -> tuple[Point, ...] | None:
    """CTR caliper points from lung masks (image-sized booleans), or None when no two lungs are found.

    Thoracic width: the widest row of the lungs (outer edges of the whole-lung mask, else of the
    visible one), the inner margins of the ribs. Cardiac width: in the lower half of the lungs,
    the widest gap between the two visible lung fields' inner edges, where the heart borders lie,
    among the rows where both fields are still at least 40% of their widest: the narrow tips of
    the costophrenic angles would otherwise make the gap at the lung bases look like the heart.
    The reader adjusts both; this is a starting point, not a measurement, and none is proposed
    when the ratio it would give is outside :data:`PLAUSIBLE_CTR`.
    """
    outer = whole if whole is not None and whole.any() else visible
    if outer is None or not outer.any() or not visible.any():
        return None
    rows = np.flatnonzero(outer.any(axis=1))
    best = (0, None, None, None)
    for r in rows:
        cols = np.flatnonzero(outer[r])
        if cols[-1] - cols[0] > best[0]:
            best = (cols[-1] - cols[0], r, cols[0], cols[-1] + 1)
    _, t_row, t_left, t_right = best
    mid = (t_left + t_right) / 2.0
    top, bottom = rows[0], rows[-1]
    split = int(round(mid))
    left_width, right_width = visible[:, :split].sum(axis=1), visible[:, split:].sum(axis=1)
    wide_enough = (left_width >= 0.4 * left_width.max()) & (right_width >= 0.4 * right_width.max())
    heart = (0.0, None, None, None)
    for r in range(int(top + (bottom - top) * 0.5), int(bottom) + 1):
        if not wide_enough[r]:
            continue
        cols = np.flatnonzero(visible[r])
        left, right = cols[cols < mid], cols[cols >= mid]
        if len(left) == 0 or len(right) == 0:
            continue
        gap = right[0] - (left[-1] + 1)
        if gap > heart[0]:
            heart = (gap, r, left[-1] + 1, right[0])
    if heart[1] is None:
        return None
    _, h_row, h_left, h_right = heart
    if not PLAUSIBLE_CTR[0] <= (h_right - h_left) / (t_right - t_left) <= PLAUSIBLE_CTR[1]:
        return None  # the masks did not show the heart borders (0.28 on a real CR film): the reader places both
    cy, ty = h_row + 0.5, t_row + 0.5
    return ((float(h_left), cy), (float(h_right), cy), (float(t_left), ty), (float(t_right), ty))


def measure(annotation: Annotation, pixels: np.ndarray, meta: ImageMeta) -> Measurement | None:
    """What ``annotation`` measures on this image (None for arrows and text)."""
    spacing = spacing_of(meta)
    p = annotation.points
    if annotation.kind == "distance":
        length = spacing.length(p[1][0] - p[0][0], p[1][1] - p[0][1])
        return Measurement("Distance", {"length": length}, {"length": spacing.unit})
    if annotation.kind == "angle":
        return Measurement("Angle", {"angle": angle_at(p[0], p[1], p[2])}, {"angle": "deg"})
    if annotation.kind == "cobb":
        return Measurement("Cobb angle", {"angle": cobb_angle(*p)}, {"angle": "deg"})
    if annotation.kind in ("rect", "ellipse"):
        return roi_stats(pixels, annotation.kind, p[0], p[1], spacing)
    if annotation.kind == "ctr":
        cardiac = spacing.length(p[1][0] - p[0][0], 0.0)
        thoracic = spacing.length(p[3][0] - p[2][0], 0.0)
        ratio = cardiac / thoracic if thoracic > 0 else float("nan")
        note = AP_CTR_NOTE if meta.view_position.strip().upper() == "AP" else ""
        values = {"ratio": ratio, "cardiac": cardiac, "thoracic": thoracic}
        return Measurement("CTR", values, {"ratio": "", "cardiac": spacing.unit, "thoracic": spacing.unit}, note)
    return None


def annotations_to_json(annotations: Sequence[Annotation]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in annotations]


def annotations_from_json(items: Any) -> list[Annotation]:
    """Annotations from their JSON list; a damaged entry raises ValueError naming its position."""
    if not isinstance(items, list):
        raise ValueError("annotations must be a JSON list")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Annotation.from_dict(item))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"annotation {i + 1}: {exc}") from None
    return out
