"""Bounds for every image this package derives from an input (exports, overlays, thumbnails).

An input inside the loader's limits can still have an extreme shape: a 1 x 5000 PNG enlarged
to a 768 px wide export becomes 768 x 3,840,000 (about 9 GB as RGB). Every derived image is
therefore sized here, by area and by each side, never by one side alone.
"""

from __future__ import annotations

import math

__all__ = ["MAX_DERIVED_PIXELS", "MAX_DERIVED_SIDE", "bounded_size", "bounded_scale"]

# 36 MP RGB is about 108 MB: enough for a full-resolution 6000 x 6000 film, small enough for any workstation.
MAX_DERIVED_PIXELS = 36_000_000
MAX_DERIVED_SIDE = 12_000


def bounded_scale(
    height: int,
    width: int,
    wanted: float = 1.0,
    *,
    max_pixels: int = MAX_DERIVED_PIXELS,
    max_side: int = MAX_DERIVED_SIDE,
) -> float:
    """``wanted`` reduced until ``height x width`` scaled by it fits ``max_pixels`` and ``max_side``."""
    height, width = max(1, int(height)), max(1, int(width))
    scale = float(wanted)
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    scale = min(scale, max_side / height, max_side / width, math.sqrt(max_pixels / (height * width)))
    return scale


def bounded_size(
    height: int,
    width: int,
    wanted: float = 1.0,
    *,
    max_pixels: int = MAX_DERIVED_PIXELS,
    max_side: int = MAX_DERIVED_SIDE,
) -> tuple[int, int]:
    """(height, width) of the image scaled by ``wanted`` within the bounds; each side at least 1."""
    scale = bounded_scale(height, width, wanted, max_pixels=max_pixels, max_side=max_side)
    h = min(max_side, max(1, int(height * scale)))
    w = min(max_side, max(1, int(width * scale)))
    # Rounding a side up to 1 px can only add a sliver; trim the other side if the area still overflows.
    if h * w > max_pixels:
        if h >= w:
            h = max(1, max_pixels // w)
        else:
            w = max(1, max_pixels // h)
    return h, w
