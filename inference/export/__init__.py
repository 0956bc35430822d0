"""Exports of a result: annotated PNG, one-page PDF report, DICOM Secondary Capture, DICOM Structured
Report and Grayscale Softcopy Presentation State (for DICOM sources), CSV/JSON tables.

:func:`export_files` is the one path for one file and for many (viewer, ``predict
--export-dir``, library): it names every file ``<stem>.cxr.<ext>``, never writes to an
opened/source file or over a file this application did not write, and writes through a
temporary file so that a failure never leaves a truncated export. Identifiers are dropped
unless ``ExportOptions.keep_identifiers`` (see :mod:`inference.export.privacy`).
"""

from inference.export.annotate import render_annotated
from inference.export.batch import (
    ON_EXISTING,
    OUTPUT_INFIX,
    TABLE_NAME,
    ExportItem,
    ExportReport,
    PlannedTarget,
    ProtectedFiles,
    export_files,
    export_name,
    export_stem,
    plan_exports,
    written_by_us,
)
from inference.export.dicom_sc import secondary_capture, write_dicom_sc
from inference.export.files import ExportError, atomic_write, unique_path
from inference.export.many import DEFAULT_FORMATS, FORMAT_TITLES, FORMATS, TABLE_FORMATS, parse_formats
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.pacs import write_gsps, write_sr
from inference.export.pdf import report_figure, write_pdf
from inference.export.png import write_png
from inference.export.reference import dicom_object_refusal, reference_header
from inference.export.tables import records_to_csv, result_record, verdict_record, write_csv, write_json

__all__ = [
    "DEFAULT_FORMATS",
    "DISCLAIMER",
    "FORMATS",
    "FORMAT_TITLES",
    "ON_EXISTING",
    "OUTPUT_INFIX",
    "TABLE_FORMATS",
    "TABLE_NAME",
    "ExportError",
    "ExportItem",
    "ExportOptions",
    "ExportReport",
    "PlannedTarget",
    "ProtectedFiles",
    "atomic_write",
    "dicom_object_refusal",
    "export_files",
    "export_name",
    "export_stem",
    "parse_formats",
    "plan_exports",
    "records_to_csv",
    "reference_header",
    "render_annotated",
    "report_figure",
    "result_record",
    "secondary_capture",
    "unique_path",
    "verdict_record",
    "write_csv",
    "write_dicom_sc",
    "write_gsps",
    "write_json",
    "write_pdf",
    "write_png",
    "write_sr",
    "written_by_us",
]
