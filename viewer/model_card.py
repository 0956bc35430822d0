"""Model cards and evaluation reports as HTML, for the model manager and the training dialog.

Everything shown comes from a model's ``model.json``, which anyone can write: every value is
rendered as plain text (HTML-escaped), numbers only when they are numbers, and a field of
the wrong shape is left out instead of breaking the card. A model must not be able to show
fake figures or markup through ``metrics`` or any other field.
"""

from __future__ import annotations

from html import escape
from typing import Any

from inference.bundle import BundleInfo

__all__ = [
    "model_card_html",
    "metrics_html",
    "confusion_html",
    "error_card_html",
    "lineage_html",
    "comparison_html",
    "adaptation_html",
]

_HEADLINE = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("macro_auc", "Macro AUC (one-vs-rest)"),
    ("ece", "Calibration error (ECE)"),
    ("n_images", "Images"),
)


def _num(value: Any, digits: int = 3) -> str:
    """A value as escaped text: numbers formatted, anything else as plain text (never markup)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value)[:200])


def _fig(value: Any, digits: int = 3) -> str:
    """A measured figure: shown only when it is a number (a text in a figure's place is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "—"
    return _num(value, digits)


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else empty (a hostile card may put anything anywhere)."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value == value else None


def error_card_html(name: str, error: str) -> str:
    """The card of a model folder that cannot be read: its name and the error, as plain text."""
    return f"<h2>{escape(name)}</h2><p style='color:#ef5b5b'>{escape(error)}</p>"


def confusion_html(cm: dict[str, Any]) -> str:
    cm = _dict(cm)
    classes = [str(c) for c in cm.get("classes", [])] if isinstance(cm.get("classes"), list) else []
    matrix = cm.get("matrix", [])
    if not isinstance(matrix, list) or not all(
        isinstance(row, list) and len(row) == len(classes) and all(_count(v) is not None for v in row) for row in matrix
    ):
        return ""
    matrix = [[_count(v) or 0 for v in row] for row in matrix]
    if not classes or not matrix:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in classes)
    rows = []
    for name, row in zip(classes, matrix):
        total = sum(row) or 1
        cells = []
        for j, v in enumerate(row):
            shade = int(40 + 160 * v / total)
            colour = f"rgb(30,{shade // 2 + 40},{shade})" if classes[j] == name else f"rgb({shade // 2 + 30},40,45)"
            cells.append(f"<td align='center' style='background:{colour}'>{int(v)}</td>")
        rows.append(f"<tr><th align='left'>{escape(name)}</th>{''.join(cells)}</tr>")
    return (
        "<p><b>Confusion matrix</b> (rows: true class, columns: predicted)</p>"
        f"<table cellspacing='0' cellpadding='4' border='1'><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def metrics_html(metrics: dict[str, Any]) -> str:
    """One evaluation (``training.evaluate.compute_metrics``) as headline figures, per-class table, matrix."""
    metrics = _dict(metrics)
    if not metrics:
        return "<p>No metrics.</p>"
    head = "".join(
        f"<tr><td>{label}</td><td align='right'><b>{_fig(metrics.get(key))}</b></td></tr>"
        for key, label in _HEADLINE
        if key in metrics
    )
    parts = [f"<table cellspacing='0' cellpadding='3'>{head}</table>"]
    per_class = _dict(metrics.get("per_class"))
    if per_class:
        cols = ("precision", "recall", "specificity", "f1", "auc", "support")
        header = "".join(f"<th>{c.capitalize() if c != 'recall' else 'Recall (sens.)'}</th>" for c in cols)
        rows = "".join(
            f"<tr><td>{escape(name)}</td>"
            + "".join(f"<td align='right'>{_fig(_dict(m).get(c))}</td>" for c in cols)
            + "</tr>"
            for name, m in per_class.items()
        )
        parts.append(f"<table cellspacing='0' cellpadding='3' border='1'><tr><th>Class</th>{header}</tr>{rows}</table>")
    if metrics.get("confusion_matrix"):
        parts.append(confusion_html(metrics["confusion_matrix"]))
    by_source = _dict(metrics.get("by_source"))
    if by_source:
        rows = "".join(
            f"<tr><td>{escape(src)}</td><td align='right'>{_fig(_dict(m).get('n_images', ''))}</td>"
            f"<td align='right'>{_fig(_dict(m).get('accuracy'))}</td>"
            f"<td align='right'>{_fig(_dict(m).get('macro_f1'))}</td></tr>"
            for src, m in by_source.items()
        )
        parts.append(
            "<p><i>Per source</i></p><table cellspacing='0' cellpadding='3' border='1'>"
            f"<tr><th>Source</th><th>Images</th><th>Accuracy</th><th>Macro-F1</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _split_metrics(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Metrics per split ({"val": {...}, "test": {...}}) or a single evaluation."""
    if "accuracy" in metrics or "per_class" in metrics:
        return [("Evaluation", metrics)]
    names = {
        "val": "Validation split",
        "test": "Test split",
        "train": "Training split",
        "local_check": "Local check set (adaptation)",
    }
    return [(names.get(k, str(k)), v) for k, v in metrics.items() if isinstance(v, dict)]


def _preprocessing_text(info: BundleInfo) -> str:
    p = info.preprocessing
    steps = ["display window, 8 bits"]
    if p.crop == "lungs":
        steps.append(f"crop to the lung fields (+{p.crop_margin:.0%} margin)")
    steps.append(f"resize to {p.size} px")
    if p.clahe:
        steps.append(f"CLAHE (clip {p.clahe_clip:g}, {p.clahe_tiles}×{p.clahe_tiles} tiles)")
    return ", ".join(steps)


def model_card_html(info: BundleInfo, path: str = "", bundled: bool = False, active: bool = False) -> str:
    tags = []
    if bundled:
        tags.append("bundled")
    if active:
        tags.append("active")
    training = _dict(info.training)
    data = _dict(training.get("data"))
    rows = [
        ("Architecture", info.architecture),
        ("Classes", ", ".join(info.class_names)),
        ("Input", f"{info.input_size} × {info.input_size}, {info.channels} channel{'s' if info.channels != 1 else ''}"),
        ("Preprocessing", _preprocessing_text(info)),
        ("Grad-CAM layer", ", ".join(info.cam_layers) + (" (the mean of their maps)" if info.gradcam_layers else "")),
        ("Created", info.created),
        ("Keras / TensorFlow", " / ".join(v for v in (info.keras_version, info.tensorflow_version) if v)),
        ("Folder", path),
    ]
    if training.get("init"):
        rows.append(("Initialisation", str(training["init"])))
    held_out = _dict(training.get("config")).get("val_sources") or []
    if isinstance(held_out, list) and held_out:
        rows.append(("Held-out sources", ", ".join(map(str, held_out)) + " (validated on, never trained on)"))
    if training.get("epochs_run") is not None:
        rows.append(("Epochs", str(training["epochs_run"])))
    if training.get("hardware"):
        rows.append(("Trained on", f"{training['hardware']} in {training.get('training_seconds', '?')} s"))
    facts = "".join(f"<tr><td><i>{escape(k)}</i></td><td>{escape(str(v))}</td></tr>" for k, v in rows if v)
    parts = [
        f"<h2>{escape(info.display_name)}</h2>",
        f"<p><b>{escape(' · '.join(tags))}</b></p>" if tags else "",
        f"<p>{escape(info.description)}</p>" if info.description else "",
        f"<table cellspacing='0' cellpadding='2'>{facts}</table>",
        lineage_html(training),
    ]
    counts = {k: v for k, v in _dict(data.get("counts")).items() if isinstance(v, dict)}
    if counts:
        classes = list(info.class_names)
        splits = [s for s, c in counts.items() if c]
        header = "".join(f"<th>{escape(s)}</th>" for s in splits)
        body = "".join(
            f"<tr><td>{escape(c)}</td>"
            + "".join(f"<td align='right'>{_num(counts[s].get(c, 0))}</td>" for s in splits)
            + "</tr>"
            for c in classes
        )
        parts.append(
            f"<h3>Training data</h3><p>{escape(str(data.get('path', '')))} "
            f"({_num(data.get('n_images'))} images)</p>"
            f"<table cellspacing='0' cellpadding='3' border='1'><tr><th>Class</th>{header}</tr>{body}</table>"
        )
    sources = _dict(data.get("sources"))
    if sources:
        # {source: {split: images}}: one row per source, one column per split, like the class table.
        splits = list(dict.fromkeys(sp for v in sources.values() if isinstance(v, dict) for sp in v))
        header = "".join(f"<th>{escape(sp)}</th>" for sp in splits)
        body = "".join(
            f"<tr><td>{escape(str(src))}</td>"
            + "".join(f"<td align='right'>{(_num(v.get(sp, 0)) if isinstance(v, dict) else '')}</td>" for sp in splits)
            + "</tr>"
            for src, v in sources.items()
        )
        parts.append(
            f"<p><i>Images per source</i></p><table cellspacing='0' cellpadding='3' border='1'>"
            f"<tr><th>Source</th>{header}</tr>{body}</table>"
        )
    for title, m in _split_metrics(_dict(info.metrics)):
        parts.append(f"<h3>{escape(title)}</h3>{metrics_html(m)}")
    if not info.metrics:
        parts.append("<p><i>No evaluation stored with this model.</i></p>")
    parts.append(
        "<p style='color:#f0b429'><b>Research use only, not for clinical diagnosis.</b> Figures measured on data "
        "from the training sources usually overstate performance in other hospitals.</p>"
    )
    return "".join(parts)


def lineage_html(training: dict[str, Any]) -> str:
    """Where an adapted model comes from (``training.adaptation`` in model.json), or "" for others."""
    lineage = _dict(_dict(training).get("adaptation"))
    if not lineage:
        return ""
    parent = _dict(lineage.get("parent"))
    gate = _dict(lineage.get("gate"))
    verdict = "passed" if gate.get("accepted") is True else "refused"
    rows = [
        ("Fine-tuned from", f"{_num(parent.get('name'))} {_num(parent.get('version'))}"),
        ("Parent content hash", _num(parent.get("content_hash"))),
        ("Local films", f"{_fig(lineage.get('local_films'))} ({_fig(lineage.get('check_films'))} held out to check)"),
        ("Date", _num(lineage.get("date"))),
        ("Gate", verdict),
    ]
    facts = "".join(f"<tr><td><i>{k}</i></td><td>{v}</td></tr>" for k, v in rows)
    reasons = gate.get("reasons") if isinstance(gate.get("reasons"), list) else []
    items = "".join(f"<li>{_num(r)}</li>" for r in reasons[:6])
    return (
        f"<h3>Lineage</h3><table cellspacing='0' cellpadding='2'>{facts}</table>"
        + (f"<ul>{items}</ul>" if items else "")
        + comparison_html(_dict(lineage.get("comparison")))
    )


_COMPARED = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("ece", "Calibration error (ECE)"),
    ("abstain_rate", "Abstain rate"),
)


def comparison_html(comparison: dict[str, Any]) -> str:
    """Parent and adapted model side by side on each set (check, reference): figures, recall, matrices."""
    names = {"check": "Local check set (never trained on)", "reference": "Reference images (forgetting)"}
    parts = []
    for key, block in _dict(comparison).items():
        parent, child = _dict(_dict(block).get("parent")), _dict(_dict(block).get("child"))
        if not parent or not child:
            continue
        rows = [(label, parent.get(k), child.get(k)) for k, label in _COMPARED]
        recalls_p, recalls_c = _dict(parent.get("recall")), _dict(child.get("recall"))
        rows += [(f"Recall {escape(str(c))}", recalls_p.get(c), recalls_c.get(c)) for c in recalls_p]
        body = "".join(
            f"<tr><td>{label}</td><td align='right'>{_fig(a)}</td><td align='right'><b>{_fig(b)}</b></td></tr>"
            for label, a, b in rows
        )
        parts.append(
            f"<h4>{escape(names.get(key, str(key)))}: {_fig(parent.get('n'))} films</h4>"
            "<table cellspacing='0' cellpadding='3' border='1'><tr><th></th><th>Parent</th><th>Adapted</th></tr>"
            f"{body}</table>"
            "<table><tr><td valign='top'><p><i>Parent</i></p>"
            f"{confusion_html(parent.get('confusion_matrix'))}</td>"
            "<td valign='top'><p><i>Adapted</i></p>"
            f"{confusion_html(child.get('confusion_matrix'))}</td></tr></table>"
        )
    return "".join(parts)


def adaptation_html(report: dict[str, Any]) -> str:
    """The training dialog's view of one adaptation: the gate's verdict and reasons, then the figures."""
    report = _dict(report)
    accepted = report.get("accepted") is True
    lineage = _dict(report.get("lineage"))
    colour = "#3fb950" if accepted else "#ef5b5b"
    reasons = report.get("reasons") if isinstance(report.get("reasons"), list) else []
    items = "".join(f"<li>{_num(r)}</li>" for r in reasons)
    notes = "".join(f"<li>{_num(lineage.get(k))}</li>" for k in ("calibration", "ood") if lineage.get(k))
    return (
        f"<h2 style='color:{colour}'>Gate {'passed' if accepted else 'refused'}</h2><ul>{items}{notes}</ul>"
        + comparison_html(_dict(lineage.get("comparison")))
    )
