"""Where the app finds its own resources and keeps the user's models.

Resources are resolved relative to the code (or to the PyInstaller bundle when frozen),
never to the working directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["resources_dir", "bundled_model_dir", "samples_dir", "user_data_dir", "user_models_dir"]


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def bundled_model_dir() -> Path:
    return resources_dir() / "models" / "default"


def samples_dir() -> Path:
    return resources_dir() / "samples"


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
