"""Where the app finds its own resources and keeps the user's models.

Resources are resolved relative to the code (or to the PyInstaller bundle when frozen),
never to the working directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "resources_dir",
    "bundled_model_dir",
    "samples_dir",
    "sample_files",
    "sample_stems",
    "user_data_dir",
    "user_models_dir",
]

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def bundled_model_dir() -> Path:
    return resources_dir() / "models" / "default"


def samples_dir() -> Path:
    return resources_dir() / "samples"


def sample_files() -> list[Path]:
    """The shipped sample images (PNG, JPEG and DICOM), sorted by name."""
    folder = samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)


def sample_stems() -> list[str]:
    """The collection's own ids of the samples (``..._ieee8023_00870a9c.jpg`` -> ``00870a9c``,
    ``..._kermany_IM-0115-0001.png`` -> ``IM-0115-0001``): the images that training data
    tools leave out or force into a test split, whatever format they ship in."""
    return [p.stem.split("_kermany_")[-1].split("_ieee8023_")[-1] for p in sample_files()]


def user_data_dir() -> Path:
    """Per-user data folder: ``$CXR_VIEWER_HOME``, else the XDG data home (``~/.local/share``)."""
    override = os.environ.get("CXR_VIEWER_HOME")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "cxr-viewer"


def user_models_dir() -> Path:
    return user_data_dir() / "models"
