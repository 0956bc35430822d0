"""One-page PDF report, drawn with matplotlib (no pyplot: safe off the GUI thread).

Layout, A4 portrait: title and the research-use banner; the image and its Grad-CAM
overlay side by side; the class probabilities as bars next to the model's facts; the
input file's facts; the disclaimer at the foot. Images are reduced to at most
:data:`MAX_SIDE` pixels, which prints sharply at this size and keeps the file small.
"""

from __future__ import annotations

import os
import textwrap
from datetime import datetime
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from inference.bundle import BundleInfo
from inference.export.annotate import display_gray, overlay_rgb
from inference.export.facts import format_probability, input_facts
from inference.export.files import atomic_write
from inference.export.marker import SOFTWARE
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.privacy import pseudonym
from inference.image import XRayImage
from inference.overlay import to_rgb
from inference.predictor import Explanation, Prediction
from inference.sizing import bounded_scale

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


def _shrink(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = bounded_scale(h, w, 1.0, max_side=MAX_SIDE, max_pixels=MAX_SIDE * MAX_SIDE)
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _facts_lines(
    fig: Figure, x: float, y: float, facts: list[tuple[str, str]], value_x: float, width: int = 40
) -> float:
    """Key/value lines from ``y`` down, values cut to ``width`` characters; returns the y below them."""
    for key, value in facts:
        fig.text(x, y, key, fontsize=8.5, color=_MUTED, va="top")
        text = value if len(value) <= width else value[: width - 3] + "..."
        fig.text(value_x, y, text, fontsize=8.5, color=_INK, va="top")
        y -= 0.0175
    return y


def _facts_block(fig: Figure, x: float, y: float, title: str, facts: list[tuple[str, str]], value_x: float) -> float:
    """A heading and its key/value lines; returns the y below the block."""
    fig.text(x, y, title, fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    return _facts_lines(fig, x, y - 0.026, facts, value_x)


def report_figure(
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    model_info: BundleInfo | None = None,
    created: datetime | None = None,
) -> Figure:
    """The report page as a matplotlib Figure (save it as PDF, or as PNG to look at it)."""
    options = options or ExportOptions()
    created = created or datetime.now().astimezone()
    fig = Figure(figsize=A4_INCHES)
    fig.patch.set_facecolor("white")

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

    # Images, side by side, bottoms aligned.
    gray = _shrink(to_rgb(display_gray(image, options)))
    show_overlay = explanation is not None and options.include_heatmap
    panels = [("Image", gray)]
    if show_overlay:
        overlay = _shrink(overlay_rgb(image, explanation, options))
        panels.append((f"{_method_name(explanation)}: {explanation.class_name}", overlay))
    width = 0.42 if len(panels) == 2 else 0.6
    lefts = [0.06, 0.52] if len(panels) == 2 else [0.2]
    # The panels hang from just below the banner and are as tall as the image's shape needs,
    # so a wide film leaves no hole above it; everything below follows them up.
    aspect = gray.shape[0] / gray.shape[1]
    panel_h = min(0.34, width * A4_INCHES[0] * aspect / A4_INCHES[1])
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

    # Result: the top class, then every class as a bar on a light track.
    top = panel_bottom - 0.05
    fig.text(0.06, top, "Result", fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    label = f"{prediction.label}  ({format_probability(prediction.confidence)})"
    fig.text(0.06, top - 0.026, label, fontsize=15, fontweight="bold", color=_INK, va="top")
    names = list(prediction.probabilities)
    values = [prediction.probabilities[n] for n in names]
    bars_h = 0.026 * len(names)
    bars_bottom = top - 0.062 - bars_h
    bax = fig.add_axes((0.17, bars_bottom, 0.22, bars_h))
    rows = range(len(names))
    bax.barh(rows, [1.0] * len(names), color="#eef1f4", height=0.62)
    colours = [_ACCENT if i == prediction.class_index else "#9fb0c2" for i in rows]
    bax.barh(rows, values, color=colours, height=0.62)
    bax.set_xlim(0, 1)
    bax.set_ylim(len(names) - 0.5, -0.5)
    bax.set_yticks(rows, names, fontsize=9, color=_INK)
    bax.set_xticks([])
    bax.tick_params(length=0)
    for spine in bax.spines.values():
        spine.set_visible(False)
    for i, v in enumerate(values):
        weight = "bold" if i == prediction.class_index else "normal"
        bax.text(
            1.04,
            i,
            format_probability(v),
            va="center",
            fontsize=9,
            color=_INK,
            fontweight=weight,
            transform=bax.get_yaxis_transform(),
        )

    # Model facts, to the right of the bars.
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
    model_bottom = _facts_block(fig, 0.52, top, "Model", model_facts, 0.655)

    # Input file, in two columns so that a long DICOM description never reaches the footer.
    file_label = pseudonym(image.meta.path, options.effective_salt()) if options.pseudonymous_names else None
    facts = input_facts(image, options.keep_identifiers, file_label)
    y = min(bars_bottom, model_bottom) - 0.03
    fig.text(0.06, y, "Input file", fontsize=11.5, fontweight="bold", color=_ACCENT, va="top")
    y -= 0.026
    if facts and facts[0][0] == "File":  # the name gets the whole width
        y = _facts_lines(fig, 0.06, y, facts[:1], 0.19, width=95)
        facts = facts[1:]
    half = (len(facts) + 1) // 2 if len(facts) > 4 else len(facts)
    _facts_lines(fig, 0.06, y, facts[:half], 0.19)
    _facts_lines(fig, 0.52, y, facts[half:], 0.655)

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
) -> Path:
    """The one-page report as a PDF file (written atomically)."""
    options = options or ExportOptions()
    fig = report_figure(image, prediction, explanation, options, model_info)
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
