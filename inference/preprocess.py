"""The one preprocessing shared by training and inference.

``preprocess(image, config)`` turns any loaded :class:`XRayImage` into the array a model
takes, and returns the :class:`Geometry` needed to put a heat map back on the original
image pixel for pixel. Its parameters (:class:`PreprocessConfig`) are stored in every
model bundle, so a model is always fed the way it was trained.

Why each step is what it is:

1. **Intensity: the initial display window, then 8 bits.** The training data are 8-bit
   JPEGs of radiographs as they were displayed; a DICOM with 12-16 bits is brought to the
   same footing by its own stored window (or the automatic percentile window), and
   MONOCHROME1 is inverted so that bone is always bright. Quantising to 8 bits makes a
   DICOM and its JPEG export give the same input (torchxrayvision's lesson: most "the
   model says the same for everything" bugs were input scaling).
2. **Optional crop box** (the lung fields' bounding box with a margin, see issue 7),
   given in original pixel coordinates and recorded in the geometry.
3. **Resize to a square, aspect ratio not kept.** About 40% of the public training
   images were already squashed to 224x224 by their uploaders; squashing every image
   the same way keeps all sources alike, whereas letterboxing would add black bars only
   to the full-resolution sources, a border the model could learn as a source marker.
   A chest radiograph is close to square, so the distortion is small. ``INTER_AREA``
   when shrinking (anti-aliased, no moiré from grids and text), ``INTER_LINEAR`` when
   enlarging.
4. **Optional CLAHE** (contrast-limited adaptive histogram equalisation) on the resized
   8-bit image: evens out exposure and detector differences between hospitals.
5. **Scale to [0, 1] float32**, gray replicated to the model's channel count. Each
   architecture's own input scaling (ImageNet mean/std and the like) lives inside the
   model graph, so this function never depends on the architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from inference.display import window_image
from inference.image import XRayImage

__all__ = [
    "HEAT_TAPER",
    "PreprocessConfig",
    "Geometry",
    "preprocess",
    "preprocess_uint8",
    "resize_gray",
    "to_model_input",
]


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 224
    channels: int = 1
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    crop: str = "none"  # "none" or "lungs" (the bounding box of the lung fields)
    crop_margin: float = 0.08  # fraction of the box's size added on each side

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {', '.join(sorted(unknown))}")
        return cls(**data)


# A heat map fades out beyond the crop box over this fraction of the box's longest side, instead
# of stopping at its edge: a map that ends in a hard rectangle shows the crop, not the evidence.
HEAT_TAPER = 0.08


def _taper_weights(before: int, inside: int, after: int, width: int) -> np.ndarray:
    """1 inside, a raised-cosine fall over ``width`` pixels on each side (distance d = 1..width)."""
    d_before = np.arange(before, 0, -1, dtype=np.float32)
    d_after = np.arange(1, after + 1, dtype=np.float32)
    fall = lambda d: 0.5 * (1.0 + np.cos(np.pi * d / (width + 1.0)))  # noqa: E731 - 1 near the edge, 0 at width + 1
    return np.concatenate([fall(d_before), np.ones(inside, np.float32), fall(d_after)]).astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """Where the model's input came from in the original image."""

    original_shape: tuple[int, int]  # (height, width) of the original image
    crop_box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    size: int  # side of the square model input

    def to_original(self, heatmap: np.ndarray, taper: bool = False) -> np.ndarray:
        """Map a 2-D map over the model input (any resolution) onto the original image.

        Outside the crop box the result is 0, or with ``taper`` (heat maps for the eye: screen
        and exports) the edge values fading to 0 over :data:`HEAT_TAPER` of the box's size;
        inside the box both are the same. Masks and measurements keep ``taper=False``. The
        returned array is float32 with the original image's shape.
        """
        return self.to_scaled(heatmap, 0, taper=taper)

    def scaled(self, max_side: int = 0) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """(height, width) of the original image shrunk to ``max_side`` on its longest side
        (0: not shrunk) and the crop box on that shrunk image."""
        h, w = self.original_shape
        x0, y0, x1, y1 = self.crop_box
        scale = min(1.0, max_side / float(max(h, w))) if max_side else 1.0
        if scale >= 1.0:
            return (h, w), (x0, y0, x1, y1)
        dh, dw = max(1, round(h * scale)), max(1, round(w * scale))
        bx0, by0 = min(dw - 1, int(x0 * scale)), min(dh - 1, int(y0 * scale))
        bx1, by1 = max(bx0 + 1, min(dw, round(x1 * scale))), max(by0 + 1, min(dh, round(y1 * scale)))
        return (dh, dw), (bx0, by0, bx1, by1)

    def to_scaled(self, heatmap: np.ndarray, max_side: int = 0, taper: bool = False) -> np.ndarray:
        """:meth:`to_original` on the image shrunk to ``max_side`` on its longest side (0: full size).

        The viewer shows heat maps at the size the canvas draws the film; only exports need the
        full resolution (a 3000 px film's map is 36 MB).
        """
        (h, w), (x0, y0, x1, y1) = self.scaled(max_side)
        heatmap = np.asarray(heatmap, dtype=np.float32)
        inner = cv2.resize(heatmap, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return inner
        if not taper:
            out = np.zeros((h, w), dtype=np.float32)
            out[y0:y1, x0:x1] = inner
            return out
        width = max(1, round(HEAT_TAPER * max(x1 - x0, y1 - y0)))
        top, left = min(y0, width), min(x0, width)
        bottom, right = min(h - y1, width), min(w - x1, width)
        grown = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)
        grown *= _taper_weights(top, y1 - y0, bottom, width)[:, np.newaxis]
        grown *= _taper_weights(left, x1 - x0, right, width)[np.newaxis, :]
        out = np.zeros((h, w), dtype=np.float32)
        out[y0 - top : y1 + bottom, x0 - left : x1 + right] = grown
        return out


def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D image to ``size`` x ``size`` (area when shrinking, linear when enlarging)."""
    h, w = gray.shape[:2]
    interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def _clip_box(box: tuple[int, int, int, int] | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    if box is None:
        return (0, 0, w, h)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    return (x0, y0, x1, y1)


def preprocess_uint8(
    image: XRayImage,
    config: PreprocessConfig,
    crop_box: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """Steps 1-4: the model input as a ``size`` x ``size`` uint8 image, with its geometry.

    Training caches this compact form; :func:`preprocess` adds the final scaling.
    """
    gray = window_image(image)
    box = _clip_box(crop_box, gray.shape) if config.crop != "none" else _clip_box(None, gray.shape)
    x0, y0, x1, y1 = box
    small = resize_gray(gray[y0:y1, x0:x1], config.size)
    if config.clahe:
        clahe = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(config.clahe_tiles,) * 2)
        small = clahe.apply(small)
    return small, Geometry(original_shape=gray.shape, crop_box=box, size=config.size)


def to_model_input(small: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Step 5: uint8 ``(S, S)`` (or a batch ``(N, S, S)``) to float32 in [0, 1] with channels."""
    x = small.astype(np.float32) * np.float32(1.0 / 255.0)
    x = x[..., np.newaxis]
    if config.channels > 1:
        x = np.repeat(x, config.channels, axis=-1)
    return x


def preprocess(
    image: XRayImage,
    config: PreprocessConfig,
    crop_box: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """The model input for ``image``: float32 ``(size, size, channels)`` in [0, 1]."""
    small, geometry = preprocess_uint8(image, config, crop_box)
    return to_model_input(small, config), geometry
