"""Window/level: turning full-bit-depth pixels into 8-bit gray for screens and exports."""

from __future__ import annotations

import numpy as np

from inference.image import Window, XRayImage

__all__ = [
    "CLIPPED_SHARE",
    "auto_window",
    "full_range_window",
    "initial_window",
    "apply_window",
    "window_image",
    "window_problem",
]

# Percentiles of the automatic window: wide enough to keep the lung detail and the
# mediastinum, narrow enough that a few burnt-in labels or collimator edges do not
# flatten the contrast (the same idea as Weasis' "auto" and OHIF's min/max-with-clipping).
AUTO_PERCENTILES = (0.5, 99.5)


# A stored window that sends more than this share of the pixels to one end (all black or
# all white) shows nothing of the film; issue 13 met real files whose window lay entirely
# outside their pixel values.
CLIPPED_SHARE = 0.98
# ... and one that spreads the middle 98% of the pixel values over fewer gray levels than
# this shows a flat field (a width of 1e308, a window meant for other units).
MIN_GRAY_LEVELS = 4.0


def _sample(pixels: np.ndarray) -> np.ndarray:
    flat = np.asarray(pixels).ravel()
    if flat.size > 1_000_000:  # a strided sample is plenty for percentiles and ~20x faster
        flat = flat[:: flat.size // 500_000]
    return flat


def auto_window(pixels: np.ndarray) -> Window:
    """A window spanning the 0.5th to 99.5th percentile of the pixel values."""
    flat = _sample(pixels)
    lo, hi = np.percentile(flat, AUTO_PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    return Window(center=float(lo + hi) / 2.0, width=float(hi - lo), source="auto")


def full_range_window(bits_stored: int) -> Window:
    """The whole range of an unsigned integer image of the given depth (0..255 for 8 bits)."""
    top = float(2 ** int(bits_stored) - 1)
    return Window(center=top / 2.0, width=top, source="full_range")


def window_problem(pixels: np.ndarray, window: Window, inverted: bool = False) -> str | None:
    """Why ``window`` would show (almost) nothing of ``pixels``, as the end of a sentence; None if usable.

    ``inverted``: MONOCHROME1, where low values are shown white. A SIGMOID window is judged
    by the linear ramp with the same centre and width (its tangent at the centre).
    """
    center, width = float(window.center), float(window.width)
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0 or not np.isfinite(center + width / 2.0):
        return "is not a usable number"
    values = np.asarray(pixels).ravel()
    if values.size > 200_000:  # shares and percentiles to well under a percent: a sample will do
        values = values[:: values.size // 100_000]
    if values.size == 0:
        return None
    below = float(np.count_nonzero(values <= window.low)) / values.size
    above = float(np.count_nonzero(values >= window.high)) / values.size
    dark, bright = ("white", "black") if inverted else ("black", "white")
    if below > CLIPPED_SHARE:
        return f"would show {below:.0%} of the pixels {dark}"
    if above > CLIPPED_SHARE:
        return f"would show {above:.0%} of the pixels {bright}"
    lo, hi = np.percentile(values, (1.0, 99.0))
    if hi > lo and (hi - lo) * 255.0 / width < MIN_GRAY_LEVELS:
        return "is so wide that the whole image would be one shade of gray"
    return None


def initial_window(image: XRayImage) -> Window:
    """The window a reading starts with, and the one the model's input is scaled by.

    A window stored in the file (DICOM Window Center/Width or VOI LUT) wins. 8-bit
    photographs and screenshots (PNG/JPEG) use their full range, so a JPEG reaches the
    model exactly as it was encoded. Deeper images without a stored window get the
    automatic percentile window.
    """
    if image.meta.default_window is not None:
        return image.meta.default_window
    if image.meta.window_note:  # the file's window was unusable (see window_problem)
        return auto_window(image.pixels)
    # The full range of the stored depth (0..255 for 8 bits, 0..1 for a 1-bit DICOM mask),
    # unless a DICOM rescale has moved the values out of it.
    bits = max(1, image.meta.bits_stored)
    unsigned = np.issubdtype(image.pixels.dtype, np.unsignedinteger)
    if bits <= 8 and unsigned and int(image.pixels.max(initial=0)) <= 2**bits - 1:
        return full_range_window(bits)
    return auto_window(image.pixels)


_F32_MAX = float(np.finfo(np.float32).max)


# apply_window works through this many pixels at a time: a 100-megapixel film then needs a
# few MB of float scratch instead of 400 MB, on every decode thread at once.
_BLOCK_PIXELS = 1 << 20


def apply_window(pixels: np.ndarray, window: Window, invert: bool = False) -> np.ndarray:
    """Map pixels through ``window`` to uint8 (0..255); ``invert`` swaps black and white.

    LINEAR is the DICOM ramp; SIGMOID is DICOM's logistic VOI LUT function
    ``255 / (1 + exp(-4 (x - center) / width))``. Never NaN, whatever the window's numbers.
    """
    pixels = np.asarray(pixels)
    width = min(max(float(window.width), 1e-6), _F32_MAX) if np.isfinite(window.width) else _F32_MAX
    center = float(np.clip(window.center, -_F32_MAX, _F32_MAX)) if not np.isnan(window.center) else 0.0
    low = float(window.low)
    lo = float(np.clip(low, -_F32_MAX, _F32_MAX)) if not np.isnan(low) else center
    sigmoid = window.function.upper() == "SIGMOID"
    result = np.empty(pixels.shape, dtype=np.uint8)
    source, target = pixels.reshape(-1), result.reshape(-1)
    for start in range(0, source.size, _BLOCK_PIXELS):
        block = source[start : start + _BLOCK_PIXELS]
        if sigmoid:
            out = block.astype(np.float32) - np.float32(center)
            out *= np.float32(-4.0 / width)
            np.clip(out, -80.0, 80.0, out=out)  # exp stays finite in float32
            np.exp(out, out=out)
            out += np.float32(1.0)
            np.divide(np.float32(255.0), out, out=out)
        else:
            out = block.astype(np.float32) - np.float32(lo)
            out *= np.float32(255.0 / width)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(out, 0.0, 255.0, out=out)
        out += 0.5
        target[start : start + block.size] = out
    if invert:  # after rounding, so that inverted is exactly 255 - plain (MONOCHROME1 == flipped MONOCHROME2)
        np.subtract(255, result, out=result)
    return result


def window_image(image: XRayImage, window: Window | None = None, invert: bool = False) -> np.ndarray:
    """8-bit gray of ``image`` as a reader sees it: MONOCHROME1 is shown the right way round.

    ``invert`` is the user's invert toggle, applied on top of the photometric interpretation.
    """
    window = window or initial_window(image)
    return apply_window(image.pixels, window, invert=invert != image.meta.inverted)
