"""What an export includes and whether it may replace a file."""

from __future__ import annotations

from dataclasses import dataclass

from inference.image import Window
from inference.overlay import DEFAULT_COLORMAP

__all__ = ["ExportOptions", "DISCLAIMER"]

DISCLAIMER = "Research use only, not for clinical diagnosis"


@dataclass(frozen=True)
class ExportOptions:
    # Identifiers (see inference.export.privacy: PS3.15 basic profile) are dropped unless the
    # user asks to keep them: an export leaves the workstation far more easily than the study.
    keep_identifiers: bool = False
    # Export and table names, the PDF's File line and table paths derived from a salted hash of
    # the input path instead of showing it (input names are often the patient's name).
    pseudonymous_names: bool = False
    # Secret for pseudonymous UIDs and names; None: this installation's (privacy.installation_salt).
    salt: str | None = None
    overwrite: bool = False
    colormap: str = DEFAULT_COLORMAP
    opacity: float = 0.4
    include_heatmap: bool = True
    threshold: float = 0.0  # heat at or below this is not coloured (see inference.overlay.blend)
    # The reader's current display; None means the image's initial window, as the model saw it.
    window: Window | None = None
    invert: bool = False
    # When the model abstained ("No AI result"), its probabilities are left out of every export
    # unless asked for; then they are shown greyed, as "not used for a result".
    show_abstained_probabilities: bool = False

    def effective_salt(self) -> str:
        if self.salt:
            return self.salt
        from inference.export.privacy import installation_salt

        return installation_salt()
