"""Exports of a result: annotated PNG, one-page PDF report, DICOM Secondary Capture, CSV/JSON tables.

Every writer drops patient name, ID and birth date unless ``ExportOptions.keep_identifiers``,
refuses to replace an existing file unless ``ExportOptions.overwrite``, and writes through a
temporary file so that a failure never leaves a truncated export.
"""

from inference.export.annotate import render_annotated
from inference.export.dicom_sc import secondary_capture, write_dicom_sc
from inference.export.files import ExportError, atomic_write, unique_path
from inference.export.many import FORMATS, export_all, parse_formats
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.pdf import report_figure, write_pdf
from inference.export.png import write_png
from inference.export.tables import records_to_csv, result_record, write_csv, write_json

__all__ = [
    "DISCLAIMER",
    "FORMATS",
    "ExportError",
    "ExportOptions",
    "atomic_write",
    "export_all",
    "parse_formats",
    "records_to_csv",
    "render_annotated",
    "report_figure",
    "result_record",
    "secondary_capture",
    "unique_path",
    "write_csv",
    "write_dicom_sc",
    "write_json",
    "write_pdf",
    "write_png",
]
