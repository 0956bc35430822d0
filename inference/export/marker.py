"""How a file written by this application is recognised, so that nothing else is ever replaced.

Every export carries a marker inside it (a PNG text chunk, the PDF producer, the DICOM
manufacturer, a CSV column, a JSON key). A file is *ours* only if the marker is there;
:func:`inference.export.batch.written_by_us` also asks for our ``<stem>.cxr.<ext>`` name.
The checks read at most a small part of the file and never raise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from pathlib import Path

__all__ = ["SOFTWARE", "OUTPUT_INFIX", "MARKER_COLUMN", "is_our_name", "has_our_marker"]

SOFTWARE = "CXR Viewer"
OUTPUT_INFIX = ".cxr"  # every file we write is <stem>.cxr.<ext>
MARKER_COLUMN = "software"  # CSV column and JSON record key holding SOFTWARE
_OUR_NAME = re.compile(r"^.+\.cxr\.(png|pdf|dcm|sr\.dcm|gsps\.dcm|csv|json)$", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_JSON_BYTES = 256 * 1024 * 1024


def is_our_name(path: str | os.PathLike[str]) -> bool:
    """True for ``<stem>.cxr.<ext>`` (including ``name (2).cxr.png`` and ``name.cxr.sr.dcm``)."""
    return bool(_OUR_NAME.match(Path(path).name))


def has_our_marker(path: str | os.PathLike[str]) -> bool:
    """True when the file holds this application's marker for its kind (by content, not by suffix)."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with p.open("rb") as f:
            head = f.read(16)
        if head.startswith(_PNG_SIGNATURE):
            return _png_marker(p)
        if head.startswith(b"%PDF"):
            return _pdf_marker(p)
        if _looks_like_dicom(p):
            return _dicom_marker(p)
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped.startswith((b"[", b"{")):
            return _json_marker(p)
        return _csv_marker(p)
    except Exception:  # a marker check must never be the reason an export fails
        return False


def _png_marker(path: Path) -> bool:
    """A ``Software`` text chunk saying SOFTWARE, before the image data (where we write it)."""
    with path.open("rb") as f:
        f.seek(len(_PNG_SIGNATURE))
        for _ in range(64):
            header = f.read(8)
            if len(header) < 8:
                return False
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IDAT" or length > 1 << 20:
                return False
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind in (b"tEXt", b"iTXt"):
                keyword, _, rest = data.partition(b"\0")
                if keyword == b"Software":
                    value = rest if kind == b"tEXt" else rest[2:].split(b"\0", 2)[-1]
                    return value.decode("utf-8", "replace") == SOFTWARE
    return False


def _pdf_marker(path: Path) -> bool:
    """The document information's Producer (written last by matplotlib, so read the tail)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 256 * 1024))
        tail = f.read()
    return f"/Producer ({SOFTWARE})".encode() in tail


def _looks_like_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _dicom_marker(path: Path) -> bool:
    from inference.loading import import_pydicom

    import_pydicom()
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer", "SoftwareVersions"])
    return str(ds.get("Manufacturer", "")) == SOFTWARE


def _csv_marker(path: Path) -> bool:
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        header = f.readline(64 * 1024).rstrip("\r\n").split(",")
    return len(header) >= 2 and header[0] == "file" and header[-1] == MARKER_COLUMN


def _json_marker(path: Path) -> bool:
    if path.stat().st_size > _MAX_JSON_BYTES:
        return False
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            return all(r.get(MARKER_COLUMN) == SOFTWARE for r in data)
    return False
