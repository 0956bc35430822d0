"""Writing export files safely: never over an existing file unless asked, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["ExportError", "unique_path", "atomic_write"]


class ExportError(FileExistsError):
    """An export could not be written; the message says why and what to do.

    A subclass of FileExistsError because the common case is "the file is already there".
    """


def unique_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is free, else the first free ``name (2).ext``, ``name (3).ext``..."""
    p = Path(path)
    if not p.exists():
        return p
    for n in range(2, 10_000):
        candidate = p.with_name(f"{p.stem} ({n}){p.suffix}")
        if not candidate.exists():
            return candidate
    raise ExportError(f"No free file name like {p.name} in {p.parent}.")


def _check_replaceable(target: Path) -> None:
    from inference.export.marker import SOFTWARE, has_our_marker

    if target.is_symlink() or (target.exists() and not has_our_marker(target)):
        raise ExportError(
            f"{target} was not written by {SOFTWARE}, so it is never replaced; choose another name or folder."
        )


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Let ``write(tmp)`` fill a temporary file next to ``path``, then move it into place.

    The rename is atomic on the same file system, so a crash or a full disk leaves either
    the old file or none, never a truncated one. Without ``overwrite`` an existing file is
    an :class:`ExportError`; the check is repeated just before the rename, and on POSIX the
    final step is a hard link, which fails rather than replace a file that appeared meanwhile.
    Even with ``overwrite``, only a file that carries this application's marker (see
    :mod:`inference.export.marker`) is replaced: a source image or any other file is never.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; choose another name or allow overwriting.")
    if overwrite:
        _check_replaceable(target)
    if not target.parent.is_dir():
        raise ExportError(f"The folder {target.parent} does not exist.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the export from colleagues on a shared drive
    try:
        write(tmp)
        if overwrite:
            _check_replaceable(target)  # again: the file may have changed while we wrote
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise ExportError(f"{target} already exists; choose another name or allow overwriting.") from None
            except OSError:  # no hard links here (some network or FAT file systems)
                if target.exists():
                    raise ExportError(f"{target} already exists; choose another name or allow overwriting.") from None
                os.replace(tmp, target)
    except OSError as exc:
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"Could not write {target}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target
