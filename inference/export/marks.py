"""The reader's marks as shapes, one geometry for every output that draws them.

:func:`shapes` turns an annotation (image pixel coordinates, see :mod:`inference.annotations`)
into polylines and ellipses; the presentation state writes them as graphic objects, and
:func:`burn_marks` draws them into the PNG, PDF and Secondary Capture at the picture's scale,
so a mark lands on the same anatomy in every export. Lines, rectangles, the Cobb and CTR
caliper pairs are polylines; an ellipse is given by its major then minor axis end points (as
DICOM's ELLIPSE); an arrow is its shaft plus a two-winged head at the head point; text sits at
an annotation's first point and a measured value (``Measurement.text()``) at its last point.

Colours: the reader's marks and values in amber with a dark outline (legible on white bone and
black air alike); the AI's heat peak (presentation state only) in cyan, so the two never look alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inference.annotations import Annotation, Measurement, measure
from inference.image import XRayImage

__all__ = [
    "AI_COLOUR",
    "MARK_COLOUR",
    "Shape",
    "arrow_lines",
    "burn_marks",
    "line_width_for",
    "measured",
    "shapes",
    "text_anchor",
    "value_anchor",
]

MARK_COLOUR = (255, 200, 0)
AI_COLOUR = (0, 220, 255)
_OUTLINE = (0, 0, 0)


@dataclass(frozen=True)
class Shape:
    kind: str  # "polyline" or "ellipse"
    points: np.ndarray  # (N, 2) float (x, y) in image pixel coordinates; ellipse: major then minor axis ends


def arrow_lines(tail: tuple[float, float], head: tuple[float, float]) -> list[np.ndarray]:
    """The shaft and the head (wing, tip, wing) of an arrow pointing from ``tail`` to ``head``."""
    (x0, y0), (x1, y1) = tail, head
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    size = max(3.0, 0.15 * length)
    angle = math.atan2(y1 - y0, x1 - x0)
    wings = [
        (x1 - size * math.cos(angle + s * math.pi / 7), y1 - size * math.sin(angle + s * math.pi / 7)) for s in (1, -1)
    ]
    return [np.array([tail, head], float), np.array([wings[0], head, wings[1]], float)]


def shapes(annotation: Annotation) -> list[Shape]:
    """What draws one annotation (a text annotation has no shape, only its text)."""
    p = [tuple(pt) for pt in annotation.points]
    kind = annotation.kind
    if kind in ("distance", "angle"):
        lines = [np.array(p, float)]
    elif kind in ("cobb", "ctr"):
        lines = [np.array(p[:2], float), np.array(p[2:], float)]
    elif kind == "rect":
        (x0, y0), (x1, y1) = p
        lines = [np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], float)]
    elif kind == "arrow":
        lines = arrow_lines(p[0], p[1])
    elif kind == "ellipse":
        (x0, y0), (x1, y1) = p
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        wide = abs(x1 - x0) >= abs(y1 - y0)
        axes = [(x0, cy), (x1, cy), (cx, y0), (cx, y1)] if wide else [(cx, y0), (cx, y1), (x0, cy), (x1, cy)]
        return [Shape("ellipse", np.array(axes, float))]
    else:
        return []
    return [Shape("polyline", line) for line in lines]


def text_anchor(annotation: Annotation) -> tuple[float, float]:
    """Where an annotation's own text goes (an arrow's tail, a text annotation's point)."""
    return annotation.points[0]


def value_anchor(annotation: Annotation) -> tuple[float, float]:
    """Where a measured value goes: beside the annotation's last point."""
    return annotation.points[-1]


def measured(image: XRayImage, annotations: Sequence[Annotation]) -> list[tuple[Annotation, Measurement | None]]:
    """Each annotation with what it measures on this image (None for arrows and text), as on screen."""
    return [(a, measure(a, image.pixels, image.meta)) for a in annotations]


def line_width_for(picture_width: int) -> int:
    """Mark line width in picture pixels: visible on a thumbnail and on a 3000 px film."""
    return max(2, round(picture_width / 400))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from matplotlib import get_data_path

    try:
        return ImageFont.truetype(str(Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), size)
    except OSError:
        return ImageFont.load_default(size)


def burn_marks(
    rgb: np.ndarray,
    marks: Sequence[tuple[Annotation, Measurement | None]],
    scale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """``rgb`` (the picture, ``(H, W, 3)`` uint8) with the marks drawn in; a new array.

    ``scale`` is picture pixels per image pixel along x and y (the export may enlarge a narrow
    film).
    """
    if not marks:
        return rgb
    sx, sy = scale
    canvas = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    width = line_width_for(canvas.width)
    font = _font(max(10, round(canvas.width / 55)))
    stroke = max(1, width // 2)

    def at(x: float, y: float) -> tuple[float, float]:
        # Image coordinate x is the left edge of pixel column x; Pillow addresses pixel centres.
        return (x * sx - 0.5, y * sy - 0.5)

    def text(where: tuple[float, float], value: str, colour: tuple[int, int, int]) -> None:
        # Beside the point, moved back inside the picture when it would run off an edge.
        x, y = at(*where)
        text_w, text_h = font.getlength(value) + 2 * stroke, font.getbbox("Ag")[3] + 2 * stroke
        x = max(0.0, min(x + width * 2, canvas.width - text_w))
        y = max(0.0, min(y + width * 2, canvas.height - text_h))
        draw.text((x, y), value, font=font, fill=colour, stroke_width=stroke, stroke_fill=_OUTLINE)

    for annotation, measurement in marks:
        for shape in shapes(annotation):
            pts = [at(x, y) for x, y in shape.points]
            if shape.kind == "ellipse":
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                draw.ellipse((min(xs), min(ys), max(xs), max(ys)), outline=MARK_COLOUR, width=width)
            else:
                draw.line(pts, fill=MARK_COLOUR, width=width, joint="curve")
        if annotation.text:
            text(text_anchor(annotation), annotation.text, MARK_COLOUR)
        if measurement is not None:
            text(value_anchor(annotation), measurement.text(), MARK_COLOUR)
    return np.asarray(canvas)
