"""What an export says about the patient and the input file, when identifiers are off.

"Identifiers off" (the default) follows the DICOM PS3.15 Basic Application Level
Confidentiality Profile with its Retain Patient Characteristics option: names, IDs, dates,
accession number, study ID and description, institution and physicians are left out; UIDs
are replaced by pseudonymous ones derived from the original with a secret salt (so the
exports of one study still group together, and nobody without the salt can go back); an
age over 89 is said as "90+". With pseudonymous names, export and table file names are
derived from the input path with the same salt instead of showing it.

The salt is per installation (a random file in the user data folder, never exported), so
repeated exports of one study agree; where it cannot be stored, a per-run salt is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import unicodedata
from pathlib import Path

__all__ = [
    "SALT_FILE",
    "installation_salt",
    "pseudonymous_uid",
    "pseudonym",
    "age_years",
    "age_text",
    "csv_safe",
    "printable",
]

SALT_FILE = "export-salt"
_lock = threading.Lock()
_cached: dict[str, str] = {}


def installation_salt() -> str:
    """The secret salt of this installation, made on first use; a per-run one if it cannot be stored."""
    from inference.paths import user_data_dir

    folder = user_data_dir()
    key = str(folder)
    with _lock:
        if key in _cached:
            return _cached[key]
        path = folder / SALT_FILE
        salt = ""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            salt = path.read_text(encoding="ascii").strip()
        if len(salt) < 32:
            salt = secrets.token_hex(32)
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(salt + "\n")
            with contextlib.suppress(OSError, UnicodeDecodeError):  # another process may have won the race
                stored = path.read_text(encoding="ascii").strip()
                if len(stored) >= 32:
                    salt = stored
        _cached[key] = salt
        return salt


def _digest(salt: str, text: str | bytes) -> bytes:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return hmac.new(salt.encode("utf-8"), data, hashlib.sha256).digest()


def pseudonymous_uid(uid: str, salt: str) -> str:
    """A UID under the 2.25 root (UUID-derived, PS3.5 B.2) that stands for ``uid``: same input, same UID."""
    uid = (uid or "").strip()
    if not uid:
        return ""
    return "2.25." + str(int.from_bytes(_digest(salt, "uid:" + uid)[:16], "big"))


def pseudonym(source: str | os.PathLike[str], salt: str) -> str:
    """``anon-`` and 12 hex digits standing for the input file (its absolute path)."""
    path = os.path.abspath(os.fsencode(os.fspath(source)))
    return "anon-" + _digest(salt, b"file:" + path).hex()[:12]


_AGE_UNITS = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}


def age_years(value: str) -> float | None:
    """DICOM Age String ``092Y``/``030M``... in years; None when it is not one."""
    value = (value or "").strip().upper()
    if len(value) == 4 and value[:3].isdigit() and value[3] in _AGE_UNITS:
        return int(value[:3]) / _AGE_UNITS[value[3]]
    return None


def age_text(value: str, keep_identifiers: bool) -> str:
    """A readable age; over 89 years only as "90+" unless identifiers are kept (HIPAA Safe Harbor)."""
    value = (value or "").strip()
    years = age_years(value)
    if years is None:
        return value if keep_identifiers else ""  # free text could be anything: not exported without consent
    if years > 89 and not keep_identifiers:
        return "90+ years"
    unit = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}[value[3].upper()]
    return f"{int(value[:3])} {unit}"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell that a spreadsheet could run as a formula gets a leading apostrophe (OWASP).

    Numbers and booleans are left alone (a negative number is not a formula).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_unsafe(value: str) -> str:
    """The inverse of :func:`csv_safe` for text read back from our own CSV."""
    if value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def printable(text: str | os.PathLike[str]) -> str:
    """A path or message that is safe to write as UTF-8 and to show.

    Bytes that were not valid UTF-8 in a file name (kept by Python as lone surrogates) become
    ``\\xNN``; control characters become ``\\uNNNN``.
    """
    raw = os.fspath(text)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    out = []
    for ch in raw:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape of an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or unicodedata.category(ch) == "Cc":
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def relative_or_name(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies below it, else only its name."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name
