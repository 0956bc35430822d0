"""Heat-map colouring and blending, shared by the exports and the viewer.

Colour maps come from matplotlib but are sampled once into 256-entry lookup tables, so
colouring a 3000x3000 map is one NumPy indexing operation rather than a matplotlib call.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "OVERLAY_FADE", "colormap_lut", "colorize", "heat_alpha", "blend", "to_rgb"]

# Offered in the viewer. "jet" is what Grad-CAM papers and most readers expect; "turbo" is its
# perceptually smoother successor; the sequential maps read better for colour-blind users.
COLORMAPS: list[str] = ["jet", "turbo", "inferno", "magma", "viridis", "hot"]
DEFAULT_COLORMAP = "jet"
# Heat below the first value is left transparent and heat above the second is drawn at the full
# overlay opacity, on screen and in every export alike: the anatomy the model did not look at
# stays visible, unlike a uniform tint where the "cold" colour covers every lung field.
OVERLAY_FADE = (0.15, 0.5)


@lru_cache(maxsize=16)
def colormap_lut(colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The colour map as a read-only ``(256, 3)`` uint8 RGB lookup table."""
    from matplotlib import colormaps  # deferred: matplotlib's import is not free

    try:
        cmap = colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}") from None
    lut = (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _levels(heatmap: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] (NaN counts as no heat) to LUT indices 0..255."""
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(h, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """A 2-D heat map in [0, 1] as an ``(H, W, 3)`` uint8 RGB image."""
    return colormap_lut(colormap)[_levels(heatmap)]


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """8-bit gray ``(H, W)`` (or an RGB image, returned as is) as ``(H, W, 3)`` uint8."""
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[2] == 3:
        return gray.astype(np.uint8, copy=False)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D gray image or an RGB image, got shape {gray.shape}")
    return np.repeat(gray.astype(np.uint8, copy=False)[:, :, np.newaxis], 3, axis=2)


def heat_alpha(heat: np.ndarray) -> np.ndarray:
    """Per-pixel overlay alpha (uint8) for heat in [0, 1]: the :data:`OVERLAY_FADE` ramp."""
    lo, hi = OVERLAY_FADE
    ramp = (np.asarray(heat, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return (np.clip(np.nan_to_num(ramp, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def blend(
    gray_uint8: np.ndarray,
    heatmap: np.ndarray,
    opacity: float = 0.4,
    colormap: str = DEFAULT_COLORMAP,
    threshold: float = 0.0,
) -> np.ndarray:
    """The image with the coloured heat map laid over it, as ``(H, W, 3)`` uint8 RGB.

    Exactly what the viewer shows: the colour's weight is ``opacity`` times the
    :func:`heat_alpha` fade, so cold regions keep their anatomy at any opacity. With
    ``threshold`` > 0, heat at or below it is not coloured at all.
    """
    base = to_rgb(gray_uint8)
    if heatmap.shape[:2] != base.shape[:2]:
        raise ValueError(f"heat map {heatmap.shape[:2]} and image {base.shape[:2]} differ in size")
    opacity = float(np.clip(opacity, 0.0, 1.0))
    levels = _levels(heatmap)
    color = colormap_lut(colormap)[levels]
    # Integer arithmetic (weights out of 256): about 5x faster than float32 on a 9-megapixel film.
    weight = (heat_alpha(heatmap).astype(np.uint32) * int(round(opacity * 256)) + 127) // 255
    weight = weight[:, :, np.newaxis]
    mixed = base.astype(np.uint32) * (256 - weight) + color.astype(np.uint32) * weight + 128
    out = (mixed >> 8).astype(np.uint8)
    if threshold > 0.0:
        keep = levels <= int(np.clip(threshold, 0.0, 1.0) * 255.0 + 0.5)
        out[keep] = base[keep]
    return out
