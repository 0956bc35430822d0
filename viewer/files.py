"""Which files a drop, a command line or File > Open means (no Qt widgets here)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["expand_paths", "file_dialog_filter"]


def file_dialog_filter() -> str:
    """The File > Open filter, built from the loader's suffixes (imported late: keeps start-up light)."""
    from inference.loading import SUPPORTED_SUFFIXES

    patterns = " ".join(f"*{s}" for s in SUPPORTED_SUFFIXES)
    return f"X-ray images ({patterns});;All files (*)"


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files to open for ``paths``, in order, without duplicates.

    A file named explicitly is kept whatever its suffix: the loader then says clearly why it
    cannot read it, which beats silently ignoring what the user dropped. Folders are searched
    recursively for files the loader recognises (``inference.loading.is_supported_file``,
    which also sniffs suffix-less DICOM files); hidden entries are skipped.
    """
    from inference.loading import is_supported_file

    seen: set[Path] = set()
    out: list[Path] = []

    def add(p: Path) -> None:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            add(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                candidate = Path(root) / name
                if not name.startswith(".") and is_supported_file(candidate):
                    add(candidate)
    return out
