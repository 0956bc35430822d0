"""One-page PDF report, drawn with matplotlib (no pyplot: safe off the GUI thread).

Layout, A4 portrait: title and the research-use banner; the image and its Grad-CAM
overlay side by side (the reader's marks burned in); the AI result with the class
probabilities as bars next to the model's facts ("No AI result" and its reason in full when
the model abstained); the reader's section in its own green box (class, agreement, reader,
impression, a table of the measurements); the input file's facts; the disclaimer at the foot.
Images are reduced to at most :data:`MAX_SIDE` pixels, which prints sharply at this size and keeps the file small.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from inference.annotations import Annotation
from inference.bundle import BundleInfo
from inference.export.annotate import display_gray, overlay_rgb
from inference.export.facts import format_probability, input_facts
from inference.export.files import atomic_write
from inference.export.marker import SOFTWARE
from inference.export.marks import burn_marks, measured
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.privacy import pseudonym
from inference.image import XRayImage
from inference.overlay import to_rgb
from inference.predictor import NO_AI_RESULT, Explanation, Prediction
from inference.sizing import bounded_scale
from inference.verdict import Verdict

__all__ = ["MAX_SIDE", "report_figure", "write_pdf", "FOOTNOTE"]

MAX_SIDE = 1400
A4_INCHES = (8.27, 11.69)
FOOTNOTE = (
    "This report was produced by an experimental machine-learning model for research purposes. It is not a "
    "medical device and must not be used to diagnose, treat or exclude disease. The model was trained on public "
    "images from a limited number of sources and may be wrong on images from other hospitals, scanners or age "
    "groups. The heat map shows which regions influenced the model's output; it is not a localisation of disease."
)
_INK = "#1a1a1a"
_MUTED = "#666666"
_ACCENT = "#1f4e79"
_AMBER = "#ffbf00"
_READER = "#1e6b3a"  # the reader's section: green, never the AI's blue
_READER_FILL = "#eef7f0"
_LINE = 0.0165
_MAX_TABLE_LINES = 12  # the measurement table's lines on the page; the rest are in the CSV/JSON and the SR
_MAX_IMPRESSION = 6
_LABEL_CHARS, _VALUE_CHARS = 34, 62  # the measurement table's columns (0.075-0.35, 0.36-0.93 of A4 at 8.5 pt)


def _shrink(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = bounded_scale(h, w, 1.0, max_side=MAX_SIDE, max_pixels=MAX_SIDE * MAX_SIDE)
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _facts_lines(
    fig: Figure, x: float, y: float, facts: list[tuple[str, str]], value_x: float, width: int = 40
) -> float:
    """Key/value lines from ``y`` down, values wrapped at ``width`` characters (never cut); returns the y below."""
    for key, value in facts:
        fig.text(x, y, key, fontsize=8.5, color=_MUTED, va="top")
        for line in textwrap.wrap(value, width, break_long_words=True) or [""]:
            fig.text(value_x, y, line, fontsize=8.5, color=_INK, va="top")
            y -= _LINE
    return y


def _lines_height(facts: list[tuple[str, str]], width: int) -> float:
    """The height :func:`_facts_lines` takes for ``facts`` wrapped at ``width``."""
    return sum(len(textwrap.wrap(value, width, break_long_words=True) or [""]) for _, value in facts) * _LINE


def _facts_block(fig: Figure, x: float, y: float, title: str, facts: list[tuple[str, str]], value_x: float) -> float:
    """A heading and its key/value lines; returns the y below the block."""
    fig.text(x, y, title, fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    return _facts_lines(fig, x, y - 0.026, facts, value_x)


def _reader_lines(verdict: Verdict | None) -> list[tuple[str, str]]:
    """The reader's verdict as (key, value) lines; the impression wrapped in full below them."""
    if verdict is None:
        return [("Verdict", "not read")]
    agreement = {"agree": "agrees with the AI", "disagree": "disagrees with the AI"}.get(verdict.agreement or "", "")
    lines = [("Reader's class", verdict.reader_class or "none given"), ("Agreement", agreement or "not stated")]
    who = ", ".join(v for v in (verdict.reader, verdict.time.replace("T", " ")) if v)
    if who:
        lines.append(("Read by", who))
    return lines


def _measurement_rows(marks) -> list[tuple[list[str], list[str]]]:
    """(label lines, value lines) per measurement, wrapped to their columns: an ROI's statistics
    ran past the right edge of the reader's box in one line."""
    rows = []
    for number, (annotation, measurement) in enumerate(((a, m) for a, m in marks if m is not None), start=1):
        label = measurement.label + (f" ({annotation.text})" if annotation.text else "")
        rows.append((_wrap(f"{number}. {label}", _LABEL_CHARS), _wrap(measurement.text(), _VALUE_CHARS)))
    return rows


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True) or [""]


def _row_lines(rows) -> int:
    return sum(max(len(label), len(value)) for label, value in rows)


def _shown_rows(rows, budget: int) -> list:
    """The first rows that fit in ``budget`` lines (a wrapped row takes two or more)."""
    shown: list = []
    for row in rows:
        if _row_lines([*shown, row]) > budget:
            break
        shown.append(row)
    return shown


def _reader_height(lines, impression: list[str], rows, hidden: int = 0) -> float:
    """The reader's box for ``rows`` shown and ``hidden`` more (one "... and N more" line)."""
    if not lines:
        return 0.0
    table = (0.026 + (_row_lines(rows) + (1 if hidden else 0)) * _LINE) if rows or hidden else 0.0
    return 0.040 + len(lines) * _LINE + (0.006 + len(impression) * _LINE if impression else 0.0) + table + 0.012


def _draw_reader(fig: Figure, top: float, height: float, lines, impression: list[str], rows, hidden: int) -> None:
    """The reader's section: its own green box and heading, so nobody mistakes it for the AI's."""
    fig.patches.append(
        FancyBboxPatch(
            (0.06, top - height),
            0.88,
            height,
            boxstyle="round,pad=0.004",
            transform=fig.transFigure,
            facecolor=_READER_FILL,
            edgecolor=_READER,
            linewidth=0.8,
        )
    )
    fig.text(0.075, top - 0.008, "Reader (radiologist)", fontsize=11.5, fontweight="bold", color=_READER, va="top")
    y = _facts_lines(fig, 0.075, top - 0.034, lines, 0.21, width=80)
    if impression:
        fig.text(0.075, y - 0.006, "Impression", fontsize=8.5, color=_MUTED, va="top")
        y -= 0.006
        for line in impression:
            fig.text(0.21, y, line, fontsize=8.5, color=_INK, va="top")
            y -= _LINE
    if rows or hidden:
        y -= 0.008
        fig.text(0.075, y, "Measurements", fontsize=9.5, fontweight="bold", color=_READER, va="top")
        y -= 0.018
        for label, value in rows:
            for i, line in enumerate(label):
                fig.text(0.075, y - i * _LINE, line, fontsize=8.5, color=_INK, va="top")
            for i, line in enumerate(value):
                fig.text(0.36, y - i * _LINE, line, fontsize=8.5, color=_INK, va="top")
            y -= max(len(label), len(value)) * _LINE
        if hidden:
            fig.text(
                0.075,
                y,
                f"... and {hidden} more (all in the CSV/JSON and the SR)",
                fontsize=8.5,
                color=_MUTED,
                va="top",
            )


def report_figure(
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    model_info: BundleInfo | None = None,
    created: datetime | None = None,
    annotations: Sequence[Annotation] = (),
    verdict: Verdict | None = None,
) -> Figure:
    """The report page as a matplotlib Figure (save it as PDF, or as PNG to look at it).

    With a reader's ``verdict`` or ``annotations`` the page has a "Reader" section in its own
    box under the AI's, with the measurements as a table; the marks are burned into the images.
    """
    options = options or ExportOptions()
    created = created or datetime.now().astimezone()
    fig = Figure(figsize=A4_INCHES)
    fig.patch.set_facecolor("white")
    marks = measured(image, annotations)

    # Title and banner.
    fig.text(0.06, 0.965, "Chest X-ray AI assessment", fontsize=19, fontweight="bold", color=_INK, va="top")
    fig.text(0.06, 0.934, f"Generated {created:%Y-%m-%d %H:%M %Z}  |  {SOFTWARE}", fontsize=8.5, color=_MUTED, va="top")
    fig.patches.append(
        FancyBboxPatch(
            (0.06, 0.889),
            0.88,
            0.030,
            boxstyle="round,pad=0.004",
            transform=fig.transFigure,
            facecolor=_AMBER,
            edgecolor="none",
        )
    )
    fig.text(0.5, 0.904, DISCLAIMER.upper(), fontsize=11, fontweight="bold", color=_INK, ha="center", va="center")

    # What goes under the images decides how tall they may be.
    abstained = prediction.abstained
    reason = textwrap.wrap(f"Reason: {prediction.abstain_reason}", 55) if abstained else []
    show_bars = not abstained or options.show_abstained_probabilities
    reader = verdict is not None or bool(annotations)
    reader_lines = _reader_lines(verdict) if reader else []
    impression = textwrap.wrap(verdict.impression, 95)[:_MAX_IMPRESSION] if verdict and verdict.impression else []
    if verdict and verdict.impression and len(textwrap.wrap(verdict.impression, 95)) > _MAX_IMPRESSION:
        impression[-1] += " ... (in full in the CSV/JSON and the SR)"
    rows = _measurement_rows(marks)
    # Model facts (drawn to the right of the bars) and the input file facts.
    model_facts = [("Model", f"{prediction.model_name} {prediction.model_version}")]
    if model_info is not None:
        model_facts += [
            ("Architecture", f"{model_info.architecture}, {model_info.input_size} px input"),
            ("Classes", ", ".join(model_info.class_names)),
            ("Trained", model_info.created[:10]),
        ]
    model_facts.append(("Computed on", prediction.device))
    if explanation is not None:
        model_facts.append(("Heat map", f"{_method_name(explanation)} of {explanation.class_name}"))
        if explanation.lung_heat_fraction is not None:
            model_facts.append(("Heat in lungs", f"{100 * explanation.lung_heat_fraction:.0f}%"))
    if prediction.lung_warning:
        model_facts.append(("Warning", prediction.lung_warning))
    file_label = pseudonym(image.meta.path, options.effective_salt()) if options.pseudonymous_names else None
    facts = input_facts(image, options.keep_identifiers, file_label)
    ai_h = 0.062 + len(reason) * _LINE + (0.006 + 0.026 * len(prediction.probabilities) if show_bars else 0.0)
    ai_h = max(ai_h, 0.026 + _lines_height(model_facts, 40))
    wide = [f for f in facts if f[0] in ("File", "Format")]
    narrow = [f for f in facts if f[0] not in ("File", "Format")]
    half = (len(narrow) + 1) // 2 if len(narrow) > 4 else len(narrow)
    file_h = 0.046 + _lines_height(wide, 95) + max(_lines_height(narrow[:half], 40), _lines_height(narrow[half:], 40))
    fixed = 0.05 + ai_h + 0.02 + (0.02 if reader else 0.0) + file_h
    # The measurement table gets the lines left once everything else and the smallest images
    # (0.07) are placed: a long impression with many ROIs pushed the input facts off the page.
    table_room = 0.852 - 0.10 - 0.07 - fixed - _reader_height(reader_lines, impression, []) - 0.026 - _LINE
    shown = _shown_rows(rows, max(2, min(_MAX_TABLE_LINES, int(table_room / _LINE))))
    hidden = len(rows) - len(shown)
    reader_h = _reader_height(reader_lines, impression, shown, hidden)
    below = fixed + (reader_h if reader else 0.0)
    room = 0.852 - 0.10 - below  # the footer's rule is at 0.095

    # Images, side by side, bottoms aligned, with the reader's marks burned in.
    full = to_rgb(display_gray(image, options))
    gray = _shrink(full)
    show_overlay = explanation is not None and options.include_heatmap
    scale = (gray.shape[1] / full.shape[1], gray.shape[0] / full.shape[0])
    panels = [("Image", burn_marks(gray, marks, scale))]
    if show_overlay:
        overlay = _shrink(overlay_rgb(image, explanation, options))
        panels.append((f"{_method_name(explanation)}: {explanation.class_name}", burn_marks(overlay, marks, scale)))
    width = 0.42 if len(panels) == 2 else 0.6
    lefts = [0.06, 0.52] if len(panels) == 2 else [0.2]
    # The panels hang from just below the banner and are as tall as the image's shape needs,
    # so a wide film leaves no hole above it; everything below follows them up.
    aspect = gray.shape[0] / gray.shape[1]
    panel_h = max(0.07, min(0.34, room, width * A4_INCHES[0] * aspect / A4_INCHES[1]))
    panel_bottom = 0.852 - panel_h
    for left, (title, rgb) in zip(lefts, panels):
        ax = fig.add_axes((left, panel_bottom, width, panel_h))
        ax.imshow(rgb, interpolation="antialiased")
        ax.set_title(title, fontsize=10, color=_INK, loc="left")
        ax.set_axis_off()
    if show_overlay:
        cax = fig.add_axes((0.52 + 0.42 * 0.55, panel_bottom - 0.015, 0.42 * 0.45, 0.007))
        cax.imshow(np.linspace(0, 1, 256)[np.newaxis], aspect="auto", cmap=options.colormap)
        cax.set_yticks([])
        cax.set_xticks([0, 255], ["low", "high"], fontsize=7, color=_MUTED)
        cax.tick_params(length=0, pad=2)
        for spine in cax.spines.values():
            spine.set_visible(False)

    # AI result: the top class (or "No AI result" and why, in full), then every class as a bar.
    top = panel_bottom - 0.05
    fig.text(0.06, top, "AI result", fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    label = NO_AI_RESULT if abstained else f"{prediction.label}  ({format_probability(prediction.confidence)})"
    fig.text(0.06, top - 0.026, label, fontsize=15, fontweight="bold", color=_INK, va="top")
    y = top - 0.056
    for line in reason:
        fig.text(0.06, y, line, fontsize=9, color=_INK, va="top")
        y -= _LINE
    bars_bottom = y
    if show_bars:
        names = list(prediction.probabilities)
        values = [prediction.probabilities[n] for n in names]
        bars_h = 0.026 * len(names)
        bars_bottom = y - 0.006 - bars_h
        bax = fig.add_axes((0.17, bars_bottom, 0.22, bars_h))
        rows_at = range(len(names))
        bax.barh(rows_at, [1.0] * len(names), color="#eef1f4", height=0.62)
        # An abstained result's probabilities, shown on request, are greyed: they are not a result.
        strong, weak = ("#b5b5b5", "#d5d5d5") if abstained else (_ACCENT, "#9fb0c2")
        colours = [strong if i == prediction.class_index and not abstained else weak for i in rows_at]
        bax.barh(rows_at, values, color=colours, height=0.62)
        bax.set_xlim(0, 1)
        bax.set_ylim(len(names) - 0.5, -0.5)
        bax.set_yticks(rows_at, names, fontsize=9, color=_MUTED if abstained else _INK)
        bax.set_xticks([])
        bax.tick_params(length=0)
        for spine in bax.spines.values():
            spine.set_visible(False)
        for i, v in enumerate(values):
            weight = "bold" if i == prediction.class_index and not abstained else "normal"
            bax.text(
                1.04,
                i,
                format_probability(v),
                va="center",
                fontsize=9,
                color=_MUTED if abstained else _INK,
                fontweight=weight,
                transform=bax.get_yaxis_transform(),
            )

    model_bottom = _facts_block(fig, 0.52, top, "Model", model_facts, 0.655)

    # The reader's section, in its own box.
    y = min(bars_bottom, model_bottom) - 0.02
    if reader:
        _draw_reader(fig, y, reader_h, reader_lines, impression, shown, hidden)
        y -= reader_h + 0.02

    # Input file, in two columns so that a long DICOM description never reaches the footer.
    y -= 0.01
    fig.text(0.06, y, "Input file", fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    y -= 0.026
    # The file name and the format (a transfer syntax can be long) get the whole width.
    y = _facts_lines(fig, 0.06, y, wide, 0.19, width=95)
    _facts_lines(fig, 0.06, y, narrow[:half], 0.19)
    _facts_lines(fig, 0.52, y, narrow[half:], 0.655)

    # Footer.
    fig.lines.append(Line2D([0.06, 0.94], [0.095, 0.095], transform=fig.transFigure, color="#cccccc", linewidth=0.8))
    fig.text(0.06, 0.085, textwrap.fill(FOOTNOTE, 135), fontsize=7, color=_MUTED, va="top", linespacing=1.5)
    return fig


def _method_name(explanation: Explanation) -> str:
    return "Grad-CAM++" if explanation.method == "gradcam++" else "Grad-CAM"


def write_pdf(
    path: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    model_info: BundleInfo | None = None,
    annotations: Sequence[Annotation] = (),
    verdict: Verdict | None = None,
) -> Path:
    """The one-page report as a PDF file (written atomically), with the reader's section when there is one."""
    options = options or ExportOptions()
    fig = report_figure(image, prediction, explanation, options, model_info, None, annotations, verdict)
    metadata = {
        "Title": "Chest X-ray AI assessment",
        "Subject": DISCLAIMER,
        "Creator": SOFTWARE,
        "Producer": SOFTWARE,  # the marker that says this file may be replaced by a later export
        "Keywords": f"{prediction.model_name} {prediction.model_version}",
    }

    def write(tmp: Path) -> None:
        # TrueType fonts keep the text selectable and searchable in PDF readers.
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            fig.savefig(tmp, format="pdf", metadata=metadata, dpi=200)

    return atomic_write(path, write, options.overwrite)
