"""Export format names: the per-image formats and the batch tables, parsed from user text."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEFAULT_FORMATS", "FORMATS", "FORMAT_TITLES", "TABLE_FORMATS", "parse_formats"]

# Format name -> file suffix. Every file is written as <stem>.cxr<suffix> (see inference.export.batch):
# the annotated image, the report, the DICOM Secondary Capture, and the two DICOM objects a PACS
# interprets (structured report and presentation state; for DICOM sources only, see
# inference.export.reference).
FORMATS = {"png": ".png", "pdf": ".pdf", "dcm": ".dcm", "sr": ".sr.dcm", "gsps": ".gsps.dcm"}
DEFAULT_FORMATS = ("png", "pdf", "dcm")  # what ``predict --export-dir`` writes without --formats
# What a dialog calls each format (one list for every front end).
FORMAT_TITLES = {
    "png": "Annotated PNG",
    "pdf": "PDF report",
    "dcm": "DICOM Secondary Capture",
    "sr": "DICOM Structured Report (SR, DICOM films only)",
    "gsps": "DICOM Presentation State (GSPS, DICOM films only)",
    "csv": "CSV table",
    "json": "JSON table",
}
TABLE_FORMATS = {"csv": ".csv", "json": ".json"}


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """``"png,pdf"`` (or a list) to checked format names in the order given; ValueError names a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower().lstrip(".") for s in items if s.strip()]
    names = ["dcm" if n in ("dicom", "dcm") else n for n in names]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))
