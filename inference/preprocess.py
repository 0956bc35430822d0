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

__all__ = ["PreprocessConfig", "Geometry", "preprocess", "preprocess_uint8", "resize_gray", "to_model_input"]


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


@dataclass(frozen=True)
class Geometry:
    """Where the model's input came from in the original image."""

    original_shape: tuple[int, int]  # (height, width) of the original image
    crop_box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    size: int  # side of the square model input

    def to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """Map a 2-D map over the model input (any resolution) onto the original image.

        Outside the crop box the result is 0. The returned array is float32 with the
        original image's shape.
        """
        h, w = self.original_shape
        x0, y0, x1, y1 = self.crop_box
        heatmap = np.asarray(heatmap, dtype=np.float32)
        inner = cv2.resize(heatmap, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return inner
        out = np.zeros((h, w), dtype=np.float32)
        out[y0:y1, x0:x1] = inner
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
