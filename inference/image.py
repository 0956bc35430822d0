"""The one image type every part of the app passes around.

An :class:`XRayImage` holds the pixels exactly as stored (full bit depth, after the
DICOM modality transform) plus the metadata a viewer and a model need. Identifying
data (patient, study) is kept in separate mappings so exporters can drop it by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImageLoadError", "ImageMeta", "Window", "XRayImage"]


class ImageLoadError(Exception):
    """The only exception the loader raises; its message is meant for a radiologist."""


@dataclass(frozen=True)
class Window:
    """A display window: linear ramp from ``center - width/2`` to ``center + width/2``."""

    center: float
    width: float
    source: str = "auto"  # "dicom", "voi_lut", "full_range", "auto" (percentiles), "user"
    # DICOM VOI LUT Function (0028,1056): "LINEAR" (also for LINEAR_EXACT) or "SIGMOID",
    # where ``center``/``width`` shape a logistic curve instead of a ramp.
    function: str = "LINEAR"

    @property
    def low(self) -> float:
        return self.center - self.width / 2.0

    @property
    def high(self) -> float:
        return self.center + self.width / 2.0


@dataclass(frozen=True)
class ImageMeta:
    path: str
    format: str  # "PNG", "JPEG", "DICOM"
    width: int
    height: int
    bits_stored: int
    photometric: str = "MONOCHROME2"  # MONOCHROME1 means "high values are dark"
    modality: str = ""
    original_channels: int = 1  # channels before conversion to gray (3 for RGB, 4 for CMYK)
    default_window: Window | None = None
    pixel_spacing: tuple[float, float] | None = None  # (row, column) in mm
    spacing_source: str = ""  # "PixelSpacing" or "ImagerPixelSpacing" (at the detector)
    view_position: str = ""
    # Why the file's own window (DICOM Window Center/Width or VOI LUT) is not used, for the
    # tags panel: set when it would show (almost) nothing, e.g. every pixel white. Then
    # ``default_window`` is None and the automatic window is used on screen and for the AI.
    window_note: str = ""
    patient_age: str = ""
    patient_sex: str = ""
    number_of_frames: int = 1
    frame_index: int = 0
    transfer_syntax: str = ""
    # Identifying data, kept apart so that exports can leave it out.
    patient: dict[str, str] = field(default_factory=dict)  # PatientName, PatientID, PatientBirthDate
    study: dict[str, str] = field(default_factory=dict)  # StudyInstanceUID, StudyDate, AccessionNumber...
    # (tag "(gggg,eeee)", keyword, VR, value as text) for the viewer's tag panel; DICOM only.
    tags: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def inverted(self) -> bool:
        """True when low stored values must be shown white (MONOCHROME1)."""
        return self.photometric.upper() == "MONOCHROME1"


@dataclass(frozen=True)
class XRayImage:
    """A gray 2-D image in full bit depth with its metadata."""

    pixels: np.ndarray  # shape (height, width); integer or float32, never NaN or infinite
    meta: ImageMeta
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # NaN or infinite values turn every window into NaN and the model input black; the
        # loader refuses them with a message, this keeps any other producer honest.
        pixels = self.pixels
        if isinstance(pixels, np.ndarray) and pixels.dtype.kind in "fc" and not np.isfinite(pixels).all():
            raise ValueError("XRayImage pixels must be finite (no NaN or infinite values)")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
