"""The annotated image: the radiograph with its heat map, and a caption strip underneath.

The caption (result, probabilities, model, "research use only") sits in a black strip
below the image rather than over it, so no text ever hides lung. Text is drawn with
anti-aliased DejaVu Sans (shipped with matplotlib) and sized from the image width, so it
reads the same on a 224 px thumbnail (enlarged to :data:`MIN_WIDTH`) and on a 3000 px film.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inference.annotations import Annotation
from inference.display import window_image
from inference.export.facts import caption
from inference.export.marks import burn_marks, measured
from inference.export.options import DISCLAIMER, ExportOptions
from inference.image import XRayImage
from inference.overlay import blend, colormap_lut, to_rgb
from inference.predictor import Explanation, Prediction
from inference.sizing import MAX_DERIVED_PIXELS, bounded_scale

__all__ = ["MIN_WIDTH", "display_gray", "overlay_rgb", "picture_scale", "render_annotated"]

# Narrower images are enlarged to this width: below it the caption cannot be both complete and legible.
MIN_WIDTH = 768
# The picture takes at most this many pixels, so that picture and caption together stay within
# MAX_DERIVED_PIXELS whatever the input's shape (a 1 x 5000 PNG once asked for 768 x 3,840,000).
MAX_PICTURE_PIXELS = MAX_DERIVED_PIXELS * 2 // 3
_MAX_BASE_FONT = 100  # px; caps the caption strip's height on very wide films
_WHITE = (255, 255, 255)
_GRAY = (190, 190, 190)
_MUTED = (120, 120, 120)  # probabilities of an abstained result, shown only on request
_AMBER = (255, 191, 0)
_BANNER = (0, 0, 0)


def display_gray(image: XRayImage, options: ExportOptions) -> np.ndarray:
    """The 8-bit gray image as the reader saw it (the export's window and invert)."""
    return window_image(image, options.window, options.invert)


def overlay_rgb(image: XRayImage, explanation: Explanation | None, options: ExportOptions) -> np.ndarray:
    """The windowed image with the heat map blended in (plain gray RGB when there is no map)."""
    gray = display_gray(image, options)
    if explanation is None or not options.include_heatmap:
        return to_rgb(gray)
    return blend(gray, explanation.heatmap_original, options.opacity, options.colormap, options.threshold)


@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from matplotlib import get_data_path

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(Path(get_data_path()) / "fonts" / "ttf" / name), size)
    except OSError:  # a stripped matplotlib: Pillow's built-in font still gives legible text
        return ImageFont.load_default(size)


def _fitting_font(text: str, size: int, max_width: float, bold: bool = False):
    """The font at ``size``, or smaller until ``text`` fits in ``max_width`` pixels."""
    font = _font(size, bold)
    while size > 8 and font.getlength(text) > max_width:
        size = max(8, int(size * 0.92))
        font = _font(size, bold)
    return font


def _wrapped(text: str, font, max_width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``max_width`` (a word longer than that stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(lines[-1] + " " + word) <= max_width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def picture_scale(height: int, width: int) -> float:
    """How much the export enlarges (narrow films) or reduces (huge ones) the picture."""
    return bounded_scale(height, width, MIN_WIDTH / width if width < MIN_WIDTH else 1.0, max_pixels=MAX_PICTURE_PIXELS)


def render_annotated(
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    annotations: Sequence[Annotation] = (),
) -> np.ndarray:
    """The annotated export image as ``(H, W, 3)`` uint8 RGB.

    The picture is the screen's (window, invert, heat map blended by :func:`inference.overlay.blend`)
    with the reader's ``annotations`` and their measured values burned in at the picture's scale
    (:func:`inference.export.marks.burn_marks`); the caption underneath says the AI result, or
    "No AI result" with the reason in full when the model abstained.
    """
    options = options or ExportOptions()
    picture = overlay_rgb(image, explanation, options)
    h, w = picture.shape[:2]
    scale = picture_scale(h, w)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interpolation = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
        picture = cv2.resize(picture, size, interpolation=interpolation)
    if annotations:
        sx, sy = picture.shape[1] / w, picture.shape[0] / h
        picture = burn_marks(picture, measured(image, annotations), (sx, sy))
    h, picture_w = picture.shape[:2]
    # A picture still narrower than the caption needs (an extreme shape) is centred on black.
    w = max(picture_w, MIN_WIDTH)

    show_scale = explanation is not None and options.include_heatmap
    base = min(_MAX_BASE_FONT, max(12, round(w / 42)))
    pad = round(base * 0.8)
    scale_w = round(w * 0.16) if show_scale else 0
    text_w = w - 2 * pad - (scale_w + pad if show_scale else 0)
    styled = []
    for role, text in caption(prediction, explanation, options.show_abstained_probabilities):
        if role == "title":  # one line, as large as fits
            styled.append((text, _fitting_font(text, round(base * 1.3), text_w, bold=True), _WHITE))
            continue
        # The reason for "No AI result" and a "no plausible lungs" warning say the result may be
        # meaningless: they travel with the picture in full, wrapped, never cut or shrunk away.
        size, colour = {
            "probabilities": (base, _WHITE),
            "muted": (round(base * 0.85), _MUTED),
            "model": (round(base * 0.85), _GRAY),
        }.get(role, (round(base * 0.85), _AMBER))
        font = _font(size)
        styled += [(line, font, colour) for line in _wrapped(text, font, text_w)]
    styled.append((DISCLAIMER.upper(), _fitting_font(DISCLAIMER.upper(), base, text_w, bold=True), _AMBER))
    heights = [font.getbbox("Ag")[3] for _, font, _ in styled]
    gap = round(base * 0.45)
    banner_h = pad * 2 + sum(heights) + gap * (len(styled) - 1)

    canvas = Image.new("RGB", (w, h + banner_h), _BANNER)
    canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), ((w - picture_w) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    y = h + pad
    for (text, font, colour), line_h in zip(styled, heights):
        draw.text((pad, y), text, font=font, fill=colour)
        y += line_h + gap
    if show_scale:
        _draw_colour_scale(canvas, draw, (w - pad - scale_w, h + pad, scale_w, banner_h - 2 * pad), options, base)
    return np.asarray(canvas)


def _draw_colour_scale(canvas: Image.Image, draw: ImageDraw.ImageDraw, box, options: ExportOptions, base: int) -> None:
    """A horizontal colour bar with "low"/"high" under it: how to read the overlay's colours."""
    x, y, width, height = box
    label_font = _font(max(8, round(base * 0.75)))
    title = "Grad-CAM"
    title_h = label_font.getbbox("Ag")[3]
    bar_h = max(6, round(height * 0.25))
    draw.text((x, y), title, font=label_font, fill=_GRAY)
    bar_y = y + title_h + round(base * 0.3)
    lut = colormap_lut(options.colormap)
    ramp = lut[np.linspace(0, 255, max(2, width)).astype(np.int64)]
    bar = np.broadcast_to(ramp[np.newaxis], (bar_h, ramp.shape[0], 3)).astype(np.uint8)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (x, bar_y))
    label_y = bar_y + bar_h + round(base * 0.2)
    draw.text((x, label_y), "low", font=label_font, fill=_GRAY)
    high_w = label_font.getlength("high")
    draw.text((x + width - high_w, label_y), "high", font=label_font, fill=_GRAY)
