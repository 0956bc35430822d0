"""The installed models: the bundled one and the user's own (no Qt here).

User models live in ``inference.paths.user_models_dir()``, one bundle folder each. Listing
reads only ``model.json`` (no TensorFlow), so the model manager opens instantly. Imports are
validated with :func:`inference.bundle.read_bundle_info`, copied to a temporary sibling and
renamed into place, so a failed copy never leaves a half model; nothing is ever overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inference.bundle import BundleError, BundleInfo, read_bundle_info
from inference.paths import bundled_model_dir, user_models_dir

__all__ = [
    "ModelEntry",
    "list_models",
    "model_entry",
    "import_bundle",
    "delete_user_model",
    "unique_model_dir",
    "is_user_model",
]


@dataclass
class ModelEntry:
    path: Path
    info: BundleInfo | None  # None when model.json cannot be read
    error: str
    bundled: bool

    @property
    def label(self) -> str:
        name = self.info.display_name if self.info is not None else self.path.name
        if self.bundled:
            return f"{name} (bundled)"
        return name if is_user_model(self.path) else f"{name} (from {self.path.parent})"


def model_entry(path: Path) -> ModelEntry:
    """The entry of any model folder (bundled, the user's, or elsewhere)."""
    bundled = bundled_model_dir()
    return _entry(path, bundled.exists() and path.resolve() == bundled.resolve())


def _entry(path: Path, bundled: bool) -> ModelEntry:
    try:
        return ModelEntry(path, read_bundle_info(path), "", bundled)
    except BundleError as exc:
        return ModelEntry(path, None, str(exc), bundled)


def list_models() -> list[ModelEntry]:
    """The bundled model (if installed) first, then the user's models by folder name."""
    entries = []
    bundled = bundled_model_dir()
    if bundled.is_dir():
        entries.append(_entry(bundled, True))
    root = user_models_dir()
    if root.is_dir():
        for child in sorted(root.iterdir(), key=lambda p: p.name.lower()):
            if child.is_dir() and not child.name.startswith("."):
                entries.append(_entry(child, False))
    return entries


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def unique_model_dir(name: str) -> Path:
    """A folder name under the user models folder that does not exist yet (``name``, ``name-2``...)."""
    root = user_models_dir()
    base = _slug(name)
    candidate = root / base
    n = 2
    while candidate.exists():
        candidate = root / f"{base}-{n}"
        n += 1
    return candidate


def is_user_model(path: str | os.PathLike[str]) -> bool:
    p = Path(path).resolve()
    root = user_models_dir().resolve()
    return p.parent == root and p != bundled_model_dir().resolve()


def import_bundle(source: str | os.PathLike[str]) -> Path:
    """Copy the bundle folder ``source`` into the user models folder; returns the new folder.

    Raises :class:`BundleError` when ``source`` is not a valid bundle.
    """
    src = Path(source)
    info = read_bundle_info(src)  # raises BundleError with a clear message
    dest = unique_model_dir(f"{info.name}-{info.version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".import", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        read_bundle_info(tmp)
        os.replace(tmp, dest)  # dest is free (unique_model_dir), so nothing can be overwritten
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def delete_user_model(path: str | os.PathLike[str]) -> None:
    """Delete a user model folder; the bundled model and folders elsewhere are refused."""
    p = Path(path)
    if not is_user_model(p):
        raise ValueError(f"{p} is not one of your models and cannot be deleted here.")
    shutil.rmtree(p)
