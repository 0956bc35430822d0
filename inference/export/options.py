"""What an export includes and whether it may replace a file."""

from __future__ import annotations

from dataclasses import dataclass

from inference.image import Window
from inference.overlay import DEFAULT_COLORMAP

__all__ = ["ExportOptions", "DISCLAIMER"]

DISCLAIMER = "Research use only, not for clinical diagnosis"


@dataclass(frozen=True)
class ExportOptions:
    # Patient name, ID and birth date are dropped unless the user asks to keep them: an
    # export leaves the workstation far more easily than the original study does.
    keep_identifiers: bool = False
    overwrite: bool = False
    colormap: str = DEFAULT_COLORMAP
    opacity: float = 0.4
    include_heatmap: bool = True
    threshold: float = 0.0  # heat at or below this is not coloured (see inference.overlay.blend)
    # The reader's current display; None means the image's initial window, as the model saw it.
    window: Window | None = None
    invert: bool = False
