"""Window presets for keys ``0``-``9``.

Radiographs have no absolute scale like CT's Hounsfield units: the same lung can be stored
as 40 in one 8-bit JPEG and 2,900 in a 14-bit DICOM. So apart from the file's own window,
every preset here is defined *relative to the image*, from percentiles of its pixel values
taken in display orientation (a MONOCHROME1 image is measured the way it is shown, bone
bright). The percentiles were picked on the sample radiographs so that each preset does
what its name says: "Lung" spends the gray levels on the dark lung fields, "Bone" on the
bright end, "Mediastinum" on the middle-to-bright soft tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.display import auto_window, full_range_window, initial_window
from inference.image import Window, XRayImage

__all__ = ["PRESET_HELP", "WindowPreset", "window_presets", "default_window"]


@dataclass(frozen=True)
class WindowPreset:
    key: str  # the keyboard key, "0" to "9"
    name: str
    window: Window
    description: str


# (key, name, low percentile, high percentile, description), in display orientation.
_PERCENTILE_PRESETS = (
    ("2", "Lung", 3.0, 65.0, "the dark lung fields: vessels and airspace"),
    ("3", "Bone", 40.0, 99.8, "the bright end: ribs, clavicles, spine"),
    ("4", "Mediastinum", 45.0, 97.0, "soft tissue behind the heart and the mediastinum"),
)


# For the help dialog and the menu: (key, name, what it shows).
PRESET_HELP: tuple[tuple[str, str, str], ...] = (
    ("0", "Default", "the file's window (DICOM) or the automatic window"),
    ("1", "File window", "the window stored in the DICOM header; for other files the initial window"),
    *((key, name, text) for key, name, _, _, text in _PERCENTILE_PRESETS),
    ("5", "High contrast", "the default window at half width"),
    ("6", "Low contrast", "the default window at double width"),
    ("7", "Full range", "every value the file can store"),
    ("8", "Min-max", "the darkest to the brightest pixel"),
    ("9", "Auto", "0.5th to 99.5th percentile of the pixel values"),
)


def default_window(image: XRayImage) -> Window:
    """Key ``0``: the file's window (DICOM) or the automatic one; the same the model is fed with."""
    return initial_window(image)


def _sample(pixels: np.ndarray) -> np.ndarray:
    flat = np.asarray(pixels).ravel()
    if flat.size > 500_000:
        flat = flat[:: flat.size // 250_000]
    return flat.astype(np.float64)


def _between(lo: float, hi: float, source: str) -> Window:
    if hi <= lo:
        hi = lo + 1.0
    return Window(center=(lo + hi) / 2.0, width=hi - lo, source=source)


def window_presets(image: XRayImage) -> list[WindowPreset]:
    """The ten presets of ``image``, keys ``0`` to ``9`` in order."""
    base = default_window(image)
    sample = _sample(image.pixels)
    qs = sorted({q for _, _, a, b, _ in _PERCENTILE_PRESETS for q in (a, b)})
    # Display orientation: in MONOCHROME1 low stored values are shown white.
    stored_q = [100.0 - q for q in qs] if image.meta.inverted else qs
    values = dict(zip(qs, np.percentile(sample, stored_q).tolist()))
    lo_all, hi_all = float(sample.min()), float(sample.max())
    if np.issubdtype(image.pixels.dtype, np.unsignedinteger):
        full = full_range_window(max(1, image.meta.bits_stored or image.pixels.dtype.itemsize * 8))
    else:
        full = _between(lo_all, hi_all, "full_range")

    windows = [base, base]
    for _, _, a, b, _ in _PERCENTILE_PRESETS:
        lo, hi = sorted((values[a], values[b]))
        windows.append(_between(lo, hi, "preset"))
    windows += [
        Window(base.center, max(base.width / 2.0, 1.0), "preset"),
        Window(base.center, base.width * 2.0, "preset"),
        full,
        _between(lo_all, hi_all, "preset"),
        auto_window(image.pixels),
    ]
    return [WindowPreset(key, name, window, text) for (key, name, text), window in zip(PRESET_HELP, windows)]
