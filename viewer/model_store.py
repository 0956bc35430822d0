"""The installed models: the bundled one and the user's own (no Qt here).

User models live in ``inference.paths.user_models_dir()``, one bundle folder each. Listing
reads only ``model.json`` (no TensorFlow), so the model manager opens instantly; a broken
folder is listed with its error and never stops the others from being listed.

Importing treats the chosen folder as untrusted: it is validated first (the description's
schema and the ``model.keras`` archive's declared sizes), then only regular files are copied
(links are never followed, so ``up -> ..`` or a link to a system file is left behind), up to
a size and file-count cap, into a temporary sibling that is checked again and renamed into
place. Nothing is ever overwritten, and a model that is already installed (same network and
description) is not installed twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inference.activations import predecessor, record_activation, roll_back
from inference.bundle import BundleError, BundleInfo, read_bundle_info
from inference.model_folder import INFO_FILE, MODEL_FILE, check_archive, clean_stale_temp_folders
from inference.paths import bundled_model_dir, user_models_dir

__all__ = [
    "ModelEntry",
    "list_models",
    "model_entry",
    "import_bundle",
    "delete_user_model",
    "unique_model_dir",
    "is_user_model",
    "ModelAlreadyInstalled",
    "startup_model_dir",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_FILES",
    "predecessor",
    "record_activation",
    "roll_back",
]

MAX_IMPORT_BYTES = 4 * 1024**3  # a model folder with its report; the largest networks are ~0.5 GB
MAX_IMPORT_FILES = 500
MAX_IMPORT_DEPTH = 4  # model.json, report/..., maybe report/plots/...


class ModelAlreadyInstalled(BundleError):  # noqa: N818 - reads as what happened
    """The imported folder holds a model that is installed already; ``path`` is where."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


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
    except (OSError, ValueError, RecursionError, MemoryError) as exc:  # never let one folder hide the others
        return ModelEntry(path, None, f"{path} cannot be read: {exc}", bundled)


def list_models() -> list[ModelEntry]:
    """The bundled model (if installed) first, then the user's models by folder name."""
    entries = []
    bundled = bundled_model_dir()
    if bundled.is_dir():
        entries.append(_entry(bundled, True))
    root = user_models_dir()
    if root.is_dir():
        clean_stale_temp_folders(root)  # left by a hard kill while importing or saving
        try:
            children = sorted(root.iterdir(), key=lambda p: p.name.lower())
        except OSError:
            children = []
        for child in children:
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


def _regular_files(src: Path) -> list[tuple[Path, int]]:
    """The regular files under ``src`` as (relative path, size), links and special files left out.

    Never follows a link (a folder link ``up -> ..`` would copy the disk); refuses a folder
    deeper, larger or with more files than a model folder can be.
    """
    found: list[tuple[Path, int]] = []
    total = 0
    stack: list[tuple[Path, int]] = [(Path(), 0)]
    while stack:
        rel, depth = stack.pop()
        try:
            entries = list(os.scandir(src / rel))
        except OSError as exc:
            raise BundleError(f"{src / rel} cannot be read: {exc.strerror or exc}") from None
        for e in entries:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                continue  # links are never copied nor followed
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 > MAX_IMPORT_DEPTH:
                    raise BundleError(f"{src} holds folders nested more than {MAX_IMPORT_DEPTH} deep; not a model.")
                stack.append((rel / e.name, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                found.append((rel / e.name, st.st_size))
                if len(found) > MAX_IMPORT_FILES:
                    raise BundleError(f"{src} holds more than {MAX_IMPORT_FILES} files; not a model folder.")
                if total > MAX_IMPORT_BYTES:
                    raise BundleError(f"{src} holds more than {MAX_IMPORT_BYTES / 1024**3:.0f} GB; not imported.")
    return found


def _fingerprint(folder: Path) -> str:
    """What makes two installed models the same: their network and description bytes."""
    h = hashlib.sha256()
    for name in (MODEL_FILE, INFO_FILE):
        with (folder / name).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _installed_copy(src: Path) -> ModelEntry | None:
    """The installed model (bundled or the user's) identical to the one in ``src``, if any."""
    size = (src / MODEL_FILE).stat().st_size
    fingerprint = None
    for entry in list_models():
        try:
            if entry.path.resolve() == src.resolve():
                return entry
            if (entry.path / MODEL_FILE).stat().st_size != size:
                continue
            fingerprint = fingerprint or _fingerprint(src)
            if _fingerprint(entry.path) == fingerprint:
                return entry
        except OSError:
            continue
    return None


def import_bundle(source: str | os.PathLike[str]) -> Path:
    """Copy the bundle folder ``source`` into the user models folder; returns the new folder.

    Raises :class:`BundleError` when ``source`` is not a valid bundle (checked before anything
    is copied), is too large, or holds its network or description as a link; and
    :class:`ModelAlreadyInstalled` (a ``BundleError``) when the same model is installed already.
    """
    src = Path(source)
    for name in (MODEL_FILE, INFO_FILE):
        if (src / name).is_symlink():
            raise BundleError(f"{src / name} is a link; a model folder must hold the file itself.")
    info = read_bundle_info(src)  # raises BundleError with a clear message
    check_archive(src / MODEL_FILE)
    files = _regular_files(src)
    same = _installed_copy(src)
    if same is not None:
        where = "the bundled model" if same.bundled else str(same.path)
        raise ModelAlreadyInstalled(f"{info.display_name} is already installed ({where}).", same.path)
    dest = unique_model_dir(f"{info.name}-{info.version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".import", dir=dest.parent))
    try:
        for rel, _size in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target, follow_symlinks=False)
        read_bundle_info(tmp)
        check_archive(tmp / MODEL_FILE)
        os.replace(tmp, dest)  # dest is free (unique_model_dir), so nothing can be overwritten
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def startup_model_dir(remembered: str | os.PathLike[str] | None) -> tuple[Path, str | None]:
    """The model the viewer starts with: the remembered one when its folder passes the checks,
    else the bundled model and a sentence saying why (a broken remembered model must never
    stop every later session). Reads only ``model.json`` (no TensorFlow)."""
    bundled = bundled_model_dir()
    clean_stale_temp_folders(user_models_dir())  # left by a hard kill while importing or saving
    if not remembered:
        return bundled, None
    path = Path(remembered)
    try:
        read_bundle_info(path)
        check_archive(path / MODEL_FILE)
    except (BundleError, OSError) as exc:
        return bundled, f"The last used model cannot be used ({exc}); starting with the bundled model."
    return path, None


def delete_user_model(path: str | os.PathLike[str]) -> None:
    """Delete a user model folder; the bundled model and folders elsewhere are refused."""
    p = Path(path)
    if not is_user_model(p):
        raise ValueError(f"{p} is not one of your models and cannot be deleted here.")
    shutil.rmtree(p)
