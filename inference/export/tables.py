"""Batch summaries: one record per file, written as JSON (a list) or CSV (one row each).

:func:`result_record` is the one definition of a record; the ``predict`` command prints
the same records (its docstring documents the schema).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from inference.annotations import Annotation, Measurement
from inference.export.facts import identifiers
from inference.export.files import atomic_write
from inference.export.marker import MARKER_COLUMN, SOFTWARE
from inference.export.privacy import csv_safe, printable
from inference.predictor import FileResult
from inference.verdict import Verdict

__all__ = [
    "flatten_record",
    "records_to_csv",
    "result_record",
    "rows_to_csv",
    "verdict_record",
    "write_csv",
    "write_json",
]


def _number(value: float, digits: int = 6) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def result_record(
    result: FileResult,
    model: tuple[str, str] | None = None,
    device: str | None = None,
    keep_identifiers: bool = False,
    exports: Sequence[str | os.PathLike[str]] | None = None,
    file_label: str | None = None,
) -> dict[str, Any]:
    """The summary of one file. ``model`` (name, version) and ``device`` fill in failed files.

    ``file_label`` (a pseudonym) stands for the file everywhere, also inside the error text.
    Paths that are not valid UTF-8 are escaped (see :func:`inference.export.privacy.printable`).
    """
    p = result.prediction
    error = result.error or None
    if error and file_label is not None:
        for original in sorted({str(result.file), Path(result.file).name}, key=len, reverse=True):
            if original:
                error = error.replace(original, file_label)
    record: dict[str, Any] = {
        "file": printable(file_label if file_label is not None else result.file),
        "ok": bool(result.ok),
        "error": printable(error) if error else None,
        # An abstained prediction has no class (issue 13): label null, the reason beside it;
        # the probabilities stay in the record for whoever asks for them.
        "label": p.label if p and not p.abstained else None,
        "class_index": p.class_index if p and not p.abstained else None,
        "abstained": p.abstained if p else None,
        "abstain_reason": p.abstain_reason if p else None,
        "probabilities": {k: _number(v) for k, v in p.probabilities.items()} if p else None,
        "model": {"name": p.model_name, "version": p.model_version}
        if p
        else ({"name": model[0], "version": model[1]} if model else None),
        "device": p.device if p else device,
        "lung_warning": p.lung_warning if p else None,
    }
    if result.image is not None:
        m = result.image.meta
        record["image"] = {
            "format": m.format,
            "width": m.width,
            "height": m.height,
            "bits_stored": m.bits_stored,
            "modality": m.modality or None,
            "view_position": m.view_position or None,
        }
        if keep_identifiers:
            record["patient"] = identifiers(result.image, True)
    if result.explanation is not None:
        e = result.explanation
        peak = e.peak()
        record["gradcam"] = {
            "method": e.method,
            "class": e.class_name,
            "peak": list(peak) if peak else None,
            "lung_heat_fraction": None if e.lung_heat_fraction is None else _number(e.lung_heat_fraction, 4),
        }
    if exports is not None:
        record["exports"] = [printable(x) for x in exports]
    record[MARKER_COLUMN] = SOFTWARE  # says "written by this app" (see inference.export.marker)
    return record


def verdict_record(
    verdict: Verdict | None, marks: Sequence[tuple[Annotation, Measurement | None]] = ()
) -> dict[str, Any]:
    """The reader's part of a record, merged into :func:`result_record`'s by the export.

    ``verdict``: ``{"reader_class", "agreement", "impression", "reader", "time"}`` (absent when
    the film is unread); ``measurements``: one entry per measuring annotation with its kind,
    label, text as shown, values, units and points (image pixel coordinates); absent when none.
    """
    out: dict[str, Any] = {}
    if verdict is not None:
        out["verdict"] = {
            "reader_class": verdict.reader_class,
            "agreement": verdict.agreement,
            "impression": verdict.impression or None,
            "reader": verdict.reader or None,
            "time": verdict.time or None,
        }
    measured = [
        {
            "id": a.id,
            "kind": a.kind,
            "label": m.label,
            "text": m.text(),
            "values": {k: _number(v, 4) for k, v in m.values.items()},
            "units": dict(m.units),
            "points": [[x, y] for x, y in a.points],
        }
        for a, m in marks
        if m is not None
    ]
    if measured:
        out["measurements"] = measured
    return out


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {k: record.get(k) for k in ("file", "ok", "error", "label", "abstained", "abstain_reason")}
    for name, p in (record.get("probabilities") or {}).items():
        row[f"p_{name}"] = p
    model = record.get("model") or {}
    row["model_name"], row["model_version"] = model.get("name"), model.get("version")
    row["device"] = record.get("device")
    row["lung_warning"] = record.get("lung_warning")
    for key, value in (record.get("image") or {}).items():
        row[f"image_{key}"] = value
    gradcam = record.get("gradcam")
    if gradcam:
        row["gradcam_method"], row["gradcam_class"] = gradcam["method"], gradcam["class"]
        peak = gradcam.get("peak") or (None, None)
        row["gradcam_peak_x"], row["gradcam_peak_y"] = peak
        row["lung_heat_fraction"] = gradcam.get("lung_heat_fraction")
    for key, value in (record.get("patient") or {}).items():
        row[key] = value
    verdict = record.get("verdict")
    if verdict:
        row.update({k: verdict.get(k) for k in ("reader_class", "agreement", "impression", "reader")})
        row["read_time"] = verdict.get("time")
    if record.get("measurements"):
        row["measurements"] = "; ".join(f"{m['label']} {m['text']}" for m in record["measurements"])
    if "exports" in record:
        row["exports"] = ";".join(record["exports"])
    return row


def _marker_last(columns: list[str]) -> list[str]:
    """The marker column always last (how :mod:`inference.export.marker` recognises our CSV)."""
    return [c for c in columns if c != MARKER_COLUMN] + [MARKER_COLUMN]


def records_to_csv(records: Iterable[dict[str, Any]]) -> str:
    """CSV text, one row per record; columns are the union in first-seen order (blank when absent).

    A text cell that starts like a spreadsheet formula (``=``, ``+``, ``-``, ``@``, tab, CR) is
    neutralised with a leading apostrophe: file names and a model's class names are not trusted.
    """
    return rows_to_csv([flatten_record(r) for r in records])


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of flat rows (see :func:`records_to_csv`); rows read back from our CSV may be mixed in."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    # CRLF (RFC 4180): the csv module then also quotes a cell holding a bare CR, which "\n" would not.
    writer = csv.DictWriter(out, fieldnames=_marker_last(list(columns)), restval="", lineterminator="\r\n")
    writer.writerow({c: csv_safe(c) for c in writer.fieldnames})
    for row in rows:
        cells = {k: "" if v is None else csv_safe(v) for k, v in row.items()}
        cells[MARKER_COLUMN] = SOFTWARE
        writer.writerow(cells)
    return out.getvalue()


def write_json(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], overwrite: bool = False) -> Path:
    text = json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite)


def write_csv(path: str | os.PathLike[str], records: Sequence[dict[str, Any]], overwrite: bool = False) -> Path:
    text = records_to_csv(records)
    # utf-8-sig: Excel, where most of these tables will be opened, needs the BOM to read UTF-8.
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8-sig", newline=""), overwrite)
