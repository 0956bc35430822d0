"""What the reader added to a film, kept beside the app (never inside the film): the sidecar store.

One JSON file per film in ``<user data>/reads/``, named after the film's identity so that it
comes back whichever path or copy the film is opened from:

* a DICOM file: its SOP Instance UID (``sop-1.2.840....json``);
* a PNG or JPEG (or a DICOM without a usable UID): the SHA-256 of the file's bytes
  (``sha256-<64 hex>.json``).

The file (``format: "cxr-viewer-reads"``, ``schema_version: 1``)::

    {
      "format": "cxr-viewer-reads", "schema_version": 1,
      "key": "sop-1.2.826.0.1.3680043.8.498.1",
      "file": "/data/scans/a.dcm",              # where it was last opened from
      "updated": "2026-12-01T15:04:05+00:00",
      "annotations": [{"id": "...", "kind": "distance", "points": [[x, y], [x, y]], "text": ""}],
      "verdict": {"reader_class": "Pneumonia", "agreement": "disagree", "impression": "RLL consolidation",
                  "reader": "Dr A", "time": "2026-12-01T15:04:00+00:00", "ai_label": "COVID-19",
                  "ai_model": "cxr-default 1.1.0"}          # or null until the film is read
    }

Points are image pixel coordinates (see :mod:`inference.annotations`). Writes are atomic; a
file that cannot be read is set aside (``.damaged``), never silently overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.annotations import Annotation, annotations_from_json, annotations_to_json
from inference.image import ImageMeta
from inference.paths import user_data_dir
from inference.verdict import Verdict

__all__ = ["SIDECAR_FORMAT", "Sidecar", "SidecarError", "SidecarStore", "film_key", "file_sha256"]

SIDECAR_FORMAT = "cxr-viewer-reads"
SCHEMA_VERSION = 1
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_BYTES = 4 * 1024 * 1024


class SidecarError(Exception):
    """A sidecar file could not be read or written; the message says which and why."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def film_key(meta: ImageMeta, path: str | os.PathLike[str] | None = None) -> str:
    """The film's identity: its SOP Instance UID when it has a valid one, else its content hash."""
    uid = next((value.strip() for _t, kw, _vr, value in meta.tags if kw == "SOPInstanceUID"), "")
    if uid and len(uid) <= 64 and _UID.match(uid):
        return f"sop-{uid}"
    return f"sha256-{file_sha256(path if path is not None else meta.path)}"


@dataclass
class Sidecar:
    key: str
    file: str = ""
    annotations: list[Annotation] = field(default_factory=list)
    verdict: Verdict | None = None
    updated: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "file": self.file,
            "updated": self.updated,
            "annotations": annotations_to_json(self.annotations),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Sidecar:
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise ValueError("not a CXR Viewer reads file")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"schema version {version!r} is newer than this app understands ({SCHEMA_VERSION})")
        verdict = data.get("verdict")
        return cls(
            key=str(data.get("key", "")),
            file=str(data.get("file", "")),
            annotations=annotations_from_json(data.get("annotations", [])),
            verdict=None if verdict is None else Verdict.from_dict(verdict),
            updated=str(data.get("updated", "")),
        )

    @property
    def is_empty(self) -> bool:
        return not self.annotations and self.verdict is None


class SidecarStore:
    """The folder of sidecars; ``root`` defaults to ``<user data>/reads``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else user_data_dir() / "reads"

    def path_for(self, key: str) -> Path:
        if not re.fullmatch(r"(sop-[0-9.]{1,64}|sha256-[0-9a-f]{64})", key):
            raise SidecarError(f"not a film key: {key!r}")
        return self.root / f"{key}.json"

    def load(self, key: str) -> Sidecar:
        """The film's sidecar, or an empty one; a damaged file is set aside and reported."""
        path = self.path_for(key)
        if not path.is_file():
            return Sidecar(key)
        try:
            if path.stat().st_size > _MAX_BYTES:
                raise ValueError(f"larger than {_MAX_BYTES // (1024 * 1024)} MB")
            sidecar = Sidecar.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            with contextlib.suppress(OSError):
                path.rename(aside)
            raise SidecarError(
                f"The saved annotations of this film could not be read ({exc}); kept as {aside.name}."
            ) from None
        sidecar.key = key
        return sidecar

    def save(self, sidecar: Sidecar) -> Path:
        """Write atomically; an empty sidecar removes the file."""
        path = self.path_for(sidecar.key)
        if sidecar.is_empty:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return path
        sidecar.updated = datetime.now(UTC).isoformat(timespec="seconds")
        text = json.dumps(sidecar.to_dict(), indent=1, ensure_ascii=False)
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=self.root)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise SidecarError(f"Could not save the annotations to {path}: {exc.strerror or exc}") from exc
        return path

    def film_keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
