"""Fast window/level rendering for the canvas.

The window math is :func:`inference.display.apply_window`; this module only makes it
fast enough to follow a mouse drag on a 3000x3000 16-bit image:

* Integer images go through a lookup table: ``apply_window`` is evaluated once on every
  possible stored value (at most 65,536 of them for 16 bits) and the image is indexed
  with it. Because the table *is* ``apply_window`` applied element-wise, the result is
  identical to windowing the full image directly, only ~3x faster.
* While the user drags, a downsampled preview (longest side :data:`PREVIEW_SIDE`) is
  rendered instead; the full resolution follows on release.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inference.display import apply_window, initial_window
from inference.image import Window, XRayImage
from inference.overlay import heat_alpha

__all__ = [
    "PREVIEW_SIDE",
    "THUMBNAIL_SIDE",
    "DisplayPrep",
    "Renderer",
    "downsample",
    "overlay_rgba",
    "prepare_display",
    "display_heat",
    "heat_side_for",
    "heat_side_is_stale",
    "HEAT_DISPLAY_SIDE",
    "HEAT_MAX_SIDE",
    "HEAT_MIN_SIDE",
]

PREVIEW_SIDE = 1024
THUMBNAIL_SIDE = 160
# Larger integer ranges (32-bit data) would need a bigger table than the image itself.
MAX_LUT_ENTRIES = 1 << 20


def downsample(array: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``array`` so its longest side is at most ``max_side``; returns (array, scale <= 1)."""
    h, w = array.shape[:2]
    scale = min(1.0, max_side / float(max(h, w)))
    if scale >= 1.0:
        return array, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # OpenCV resizes 8/16-bit integers and float32; anything else goes through float32.
    src = array if array.dtype in (np.uint8, np.uint16, np.int16, np.float32) else array.astype(np.float32)
    small = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
    return small, size[0] / float(w)


class Renderer:
    """Turns one image's stored pixels into 8-bit gray for a window, at full or preview resolution."""

    def __init__(self, pixels: np.ndarray, preview_side: int = PREVIEW_SIDE) -> None:
        self.pixels = np.asarray(pixels)
        self.preview, self.preview_scale = downsample(self.pixels, preview_side)
        self._lut_offset = 0
        self._lut_size = 0
        if np.issubdtype(self.pixels.dtype, np.integer) and self.pixels.size:
            lo, hi = int(self.pixels.min()), int(self.pixels.max())
            if hi - lo + 1 <= MAX_LUT_ENTRIES:
                self._lut_offset, self._lut_size = lo, hi - lo + 1
        self._lut_key: tuple[float, float, str, bool] | None = None
        self._lut: np.ndarray | None = None

    @property
    def uses_lut(self) -> bool:
        return self._lut_size > 0

    def _table(self, window: Window, invert: bool) -> np.ndarray:
        key = (float(window.center), float(window.width), window.function, bool(invert))
        if self._lut is None or self._lut_key != key:
            values = np.arange(self._lut_offset, self._lut_offset + self._lut_size, dtype=np.float64)
            self._lut = apply_window(values, window, invert=invert)
            self._lut_key = key
        return self._lut

    def render(self, window: Window, invert: bool = False, preview: bool = False) -> np.ndarray:
        """8-bit gray of the image (``preview``: of the downsampled copy) through ``window``."""
        source = self.preview if preview else self.pixels
        # An area-averaged integer preview stays inside the stored range, so the table applies.
        if self.uses_lut and np.issubdtype(source.dtype, np.integer):
            table = self._table(window, invert)
            index = source if self._lut_offset == 0 else source.astype(np.int64) - self._lut_offset
            return table[index]
        return apply_window(source, window, invert=invert)


@dataclass(frozen=True)
class DisplayPrep:
    """What showing an image needs, computed once in the loader thread (percentiles, min/max and
    the preview of a 9-megapixel image cost a few hundred milliseconds the GUI should not spend)."""

    renderer: Renderer
    window: Window  # the initial window (DICOM header or automatic)
    thumbnail: np.ndarray  # uint8 gray, longest side THUMBNAIL_SIDE, shown the right way round
    key: str = ""  # the film's identity (inference.sidecar.film_key), set by the loader for a new film


def prepare_display(image: XRayImage, thumbnail_side: int = THUMBNAIL_SIDE) -> DisplayPrep:
    renderer = Renderer(image.pixels)
    window = initial_window(image)
    small, _ = downsample(renderer.preview, thumbnail_side)
    thumbnail = apply_window(small, window, invert=image.meta.inverted)
    return DisplayPrep(renderer=renderer, window=window, thumbnail=thumbnail)


def overlay_rgba(heat: np.ndarray, colormap: str) -> np.ndarray:
    """The heat map coloured by ``inference.overlay.colorize`` with the fading alpha, (H, W, 4) uint8."""
    from inference.overlay import colorize

    rgb = colorize(heat, colormap)
    return np.dstack([rgb, heat_alpha(heat)])


HEAT_DISPLAY_SIDE = 512  # the side asked for before the canvas has shown the film at any size
# The longest heat map the screen gets: the map is a smooth interpolation of a coarse feature grid,
# so a larger one looks the same when the canvas stretches it, and colouring it would cost the GUI
# thread more than a frame.
HEAT_MAX_SIDE = 2048
HEAT_MIN_SIDE = 128


def display_heat(explanation: object, max_side: int = HEAT_DISPLAY_SIDE) -> np.ndarray:
    """The explanation's heat map on the original image, but only ``max_side`` pixels on its longest side.

    Straight from the feature-grid map (``explanation.cam``) with the crop box scaled, so no
    full-resolution map is ever built for the screen (a 3000 px film's would be 36 MB). Beyond
    the crop box the map fades out as in every export (:meth:`inference.preprocess.Geometry.to_scaled`).
    """
    geometry = explanation.geometry  # type: ignore[attr-defined]
    cam = np.asarray(explanation.cam, dtype=np.float32)  # type: ignore[attr-defined]
    return np.clip(geometry.to_scaled(cam, max_side, taper=True), 0.0, 1.0)


def heat_side_for(shown_side: float, original_side: int) -> int:
    """The heat-map side for a film whose longest side the canvas draws ``shown_side`` screen pixels
    long: that size, never above the film's own nor :data:`HEAT_MAX_SIDE`, never below
    :data:`HEAT_MIN_SIDE`; rounded up to a multiple of 64 so that small zoom steps ask for nothing."""
    side = int(np.ceil(max(float(shown_side), HEAT_MIN_SIDE) / 64.0) * 64)
    return max(1, min(side, HEAT_MAX_SIDE, int(original_side)))


def heat_side_is_stale(have: int, want: int, factor: float = 1.5) -> bool:
    """A heat map ``have`` pixels long is redone for ``want`` only after a large change: the canvas
    now shows the film ``factor`` times larger (the map would look soft) or smaller (it is wasted)."""
    return want > have * factor or want * factor < have
