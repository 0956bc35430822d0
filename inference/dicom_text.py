"""DICOM values as a reader reads them (names, dates), for the screen and the exports alike."""

from __future__ import annotations

__all__ = ["person_name", "dicom_date"]


def person_name(value: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` as ``Family, Given Middle``."""
    parts = [p.strip() for p in value.split("=")[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else (family or given)


def dicom_date(value: str) -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD``; anything else as stored."""
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value
