"""Evaluation: metrics (pure NumPy), plots (matplotlib, no GUI), reports, and ``evaluate``.

The JSON written by ``main.py evaluate --json OUT.json`` (and stored as the ``metrics`` of a
bundle, once per split) has this schema::

    {
      "accuracy": 0.95,                      # fraction of images whose top class is right
      "macro_f1": 0.94,                      # unweighted mean of the per-class F1
      "weighted_f1": 0.95,                   # mean of per-class F1 weighted by support
      "macro_precision": 0.95, "macro_recall": 0.94,
      "balanced_accuracy": 0.94,             # = macro recall (mean sensitivity)
      "per_class": {
        "COVID-19": {"precision": 1.0, "recall": 0.92,   # recall = sensitivity
                     "specificity": 1.0, "f1": 0.96, "support": 26,
                     "auc": 0.99},            # one-vs-rest ROC AUC; null when undefined
        ...
      },
      "macro_auc": 0.98,                     # mean of the defined per-class AUCs (or null)
      "confusion_matrix": {"classes": ["COVID-19", "Normal", "Pneumonia"],
                           "matrix": [[24, 1, 1], [0, 20, 0], [0, 2, 18]]},  # rows: true, columns: predicted
      "ece": 0.04,                           # expected calibration error, 15 equal-width bins
      "n_images": 66,
      # added by evaluate(): every metric above is on the covered images (those the model did
      # not abstain on, issue 13); these say how many that is and what was left out
      "coverage": 0.97,                      # share of the readable images with an AI result
      "n_total": 68, "n_covered": 66, "n_abstained": 2,
      "abstained_per_class": {"COVID-19": 1, "Normal": 1, "Pneumonia": 0},   # by true class
      "abstained_by_gate": {"scope": 0, "lungs": 1, "ood": 1},   # a film may count under several
      "all_images": {"accuracy": 0.96, "correct": 65, "n_images": 68, "ece": 0.04},  # abstentions included
      "model": {"path": ..., "name": ..., "version": ..., "architecture": ...},
      "data": "path/to/DATA",
      "excluded": {"Tuberculosis": 3},       # images of classes the model does not know
      "skipped": [["path", "reason"], ...],  # unreadable or unsupported files
      "by_source": {"hospital A": {...same metric keys, with coverage...}, ...},  # when sources are known
      "worst_source": {"source": "hospital B", "accuracy": 0.71}     # the lowest accuracy among them
    }

Undefined values (a precision with no predictions of that class, an AUC for a class absent
from the data) are null, never NaN, so the JSON stays valid everywhere.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.progress import NullProgress, TrainingProgress

__all__ = [
    "ECE_BINS",
    "SMALL_SAMPLE",
    "accuracy_line",
    "small_sample_warning",
    "wilson_interval",
    "compute_metrics",
    "metrics_by_group",
    "roc_curve",
    "roc_auc",
    "calibration_bins",
    "plot_training_curves",
    "plot_confusion_matrix",
    "plot_roc_curves",
    "plot_reliability",
    "write_report",
    "evaluate_bundle",
    "EvaluationError",
]

ECE_BINS = 15


class EvaluationError(Exception):
    """The model and the data do not fit together; the message says why."""


# ---------------------------------------------------------------------------------------------
# Metrics


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve from ranks (Mann-Whitney U, ties averaged); None if undefined."""
    y_binary = np.asarray(y_binary, dtype=bool)
    n_pos = int(y_binary.sum())
    n_neg = int(len(y_binary) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties so that equal scores count half, as the AUC's definition wants.
    _, start_idx, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start_idx + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y_binary].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds, from (0, 0) to (1, 1)."""
    y_binary = np.asarray(y_binary, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s = np.asarray(scores)[order]
    yb = y_binary[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(yb)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(yb.sum()), 1), max(int((~yb).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per confidence bin: mean confidence, accuracy and count (for ECE and the reliability diagram)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": [], "lower": [], "upper": []}
    for b in range(n_bins):
        m = idx == b
        out["lower"].append(float(edges[b]))
        out["upper"].append(float(edges[b + 1]))
        out["count"].append(float(m.sum()))
        out["confidence"].append(float(conf[m].mean()) if m.any() else 0.0)
        out["accuracy"].append(float(correct[m].mean()) if m.any() else 0.0)
    return out


SMALL_SAMPLE = 100  # below this many images a split's accuracy is stated with a warning


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion (sound at 0/n and n/n, unlike the normal one)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def small_sample_warning(n: int) -> str | None:
    if n >= SMALL_SAMPLE:
        return None
    return f"Only {n} images: this figure is uncertain (see its 95% interval); judge a model on {SMALL_SAMPLE} or more."


def accuracy_line(metrics: dict[str, Any]) -> str:
    """``accuracy 0.9697 (64/66, 95% CI 0.896-0.992)``, and the small-sample warning when it applies."""
    n, correct = metrics["n_images"], metrics.get("correct", 0)
    if not n:
        return "accuracy n/a (no images)"
    lo, hi = metrics.get("accuracy_ci95") or (0.0, 1.0)
    line = f"accuracy {metrics['accuracy']:.4f} ({correct}/{n}, 95% CI {lo:.3f}-{hi:.3f})"
    warning = small_sample_warning(n)
    return f"{line}. {warning}" if warning else line


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The metrics of the module docstring's schema for integer labels and probabilities (N, C)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = list(class_names)
    k = len(names)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise ValueError(f"probabilities have shape {probs.shape}; expected (N, {k})")
    if len(y_true) != len(probs):
        raise ValueError("labels and probabilities differ in length")
    n = len(y_true)
    y_pred = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, Any]] = {}
    f1s: list[float] = []
    precisions: list[float] = []
    recalls: list[float] = []
    aucs: list[float] = []
    supports = cm.sum(axis=1)
    for i, name in enumerate(names):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = n - tp - fp - fn
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        if precision is None or recall is None:
            f1 = None if recall is None else 0.0  # predicted never, yet present: F1 is 0
        else:
            f1 = _ratio(2 * precision * recall, precision + recall) or 0.0
        auc = roc_auc(y_true == i, probs[:, i]) if n else None
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "specificity": _ratio(tn, tn + fp),
            "f1": f1,
            "support": int(supports[i]),
            "auc": auc,
        }
        if supports[i] > 0:  # classes absent from the data do not drag the macro averages
            f1s.append(f1 or 0.0)
            precisions.append(precision or 0.0)
            recalls.append(recall or 0.0)
        if auc is not None:
            aucs.append(auc)
    present = supports > 0
    weighted_f1 = (
        float(sum((per_class[nm]["f1"] or 0.0) * supports[i] for i, nm in enumerate(names)) / n) if n else None
    )
    correct = int(np.trace(cm))
    return {
        "accuracy": _ratio(correct, n),
        "correct": correct,
        "accuracy_ci95": wilson_interval(correct, n),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "weighted_f1": weighted_f1,
        "macro_precision": float(np.mean(precisions)) if precisions else None,
        "macro_recall": float(np.mean(recalls)) if recalls else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": {"classes": names, "matrix": cm.tolist()},
        "ece": _ece(y_true, probs) if n else None,
        "n_images": int(n),
        "n_classes_present": int(present.sum()),
    }


def _ece(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    bins = calibration_bins(y_true, probs, n_bins)
    n = len(y_true)
    return float(sum(c / n * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"]) if c))


def metrics_by_group(
    y_true: np.ndarray, probs: np.ndarray, groups: Sequence[str], class_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`compute_metrics` for each group (a source, a hospital), sorted by group name."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    groups_arr = np.asarray([str(g) for g in groups])
    return {
        g: compute_metrics(y_true[groups_arr == g], probs[groups_arr == g], class_names)
        for g in sorted(set(groups_arr.tolist()))
    }


def worst_group(by_group: dict[str, dict[str, Any]], key: str = "accuracy") -> tuple[str, float] | None:
    """The group with the lowest ``key`` (ignoring undefined values)."""
    scored = [(g, m[key]) for g, m in by_group.items() if m.get(key) is not None]
    return min(scored, key=lambda t: t[1]) if scored else None


# ---------------------------------------------------------------------------------------------
# Plots (Agg canvas directly: never touches pyplot's global backend, safe next to Qt)


def _figure(width: float = 5.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_training_curves(history: dict[str, list[float]], path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(9.0, 3.6)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, marker="o", label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(metrics: dict[str, Any], path: Path, title: str = "") -> Path:
    names = metrics["confusion_matrix"]["classes"]
    cm = np.asarray(metrics["confusion_matrix"]["matrix"])
    fig = _figure(1.6 + 1.1 * len(names), 1.2 + 1.0 * len(names))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    top = cm.max() if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    return _save(fig, path)


def plot_roc_curves(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    fig = _figure()
    ax = fig.subplots()
    for i, name in enumerate(class_names):
        yb = np.asarray(y_true) == i
        auc = roc_auc(yb, probs[:, i])
        if auc is None:
            continue
        fpr, tpr = roc_curve(yb, probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC, one class vs the rest")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    bins = calibration_bins(np.asarray(y_true), np.asarray(probs))
    fig = _figure()
    ax = fig.subplots()
    centers = [(lo + hi) / 2 for lo, hi in zip(bins["lower"], bins["upper"])]
    acc = [a if c else 0.0 for a, c in zip(bins["accuracy"], bins["count"])]
    ax.bar(centers, acc, width=1.0 / len(centers), edgecolor="black", alpha=0.7, label="accuracy")
    used = [i for i, c in enumerate(bins["count"]) if c]
    ax.plot(
        [centers[i] for i in used],
        [bins["confidence"][i] for i in used],
        "o",
        color="crimson",
        label="mean confidence (bins with images)",
    )
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {_ece(np.asarray(y_true), np.asarray(probs)):.3f})" if len(y_true) else "")
    ax.legend(loc="upper left")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Reports


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def metrics_markdown(metrics: dict[str, Any], heading: str = "") -> str:
    """One split's metrics as a Markdown section."""
    lines = [f"## {heading}", ""] if heading else []
    if "coverage" in metrics:
        lines += [coverage_line(metrics) + "  "]
    lines += [
        f"Images: {metrics['n_images']}  ",
        f"{accuracy_line(metrics)[0].upper()}{accuracy_line(metrics)[1:]}  ",
        f"Accuracy: {_fmt(metrics['accuracy'])} · macro-F1: {_fmt(metrics['macro_f1'])} · "
        f"weighted F1: {_fmt(metrics['weighted_f1'])} · macro AUC: {_fmt(metrics.get('macro_auc'))} · "
        f"ECE: {_fmt(metrics['ece'])}",
        "",
        "| class | precision | recall (sensitivity) | specificity | F1 | AUC | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m.get('specificity'))} | "
            f"{_fmt(m['f1'])} | {_fmt(m['auc'])} | {m['support']} |"
        )
    names = metrics["confusion_matrix"]["classes"]
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
    lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, metrics["confusion_matrix"]["matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    by_source = metrics.get("by_source")
    if by_source:
        covers = int(all("n_covered" in m for m in by_source.values()))
        lines += [
            "",
            "Per source:",
            "",
            "| source | images | accuracy | balanced accuracy | macro-F1 | "
            + " | ".join(f"recall {n}" for n in names)
            + (" | AI result (coverage)" if covers else "")
            + " |",
            "|---" * (5 + len(names) + covers) + "|",
        ]
        for src, m in by_source.items():
            recalls = " | ".join(
                _fmt(m["per_class"][n]["recall"]) if m["per_class"][n]["support"] else "–" for n in names
            )
            cover = f" | {m['n_covered']}/{m['n_total']}" if covers else ""
            lines.append(
                f"| {src} | {m['n_images']} | {_fmt(m['accuracy'])} | {_fmt(m.get('balanced_accuracy'))} | "
                f"{_fmt(m['macro_f1'])} | {recalls}{cover} |"
            )
        worst = metrics.get("worst_source") or {}
        if worst:
            lines += ["", f"Worst source: {worst['source']} (accuracy {_fmt(worst['accuracy'])})."]
    return "\n".join(lines) + "\n"


def write_report(
    metrics: dict[str, Any],
    out_dir: Path | str,
    history: dict[str, list[float]] | None = None,
    title: str = "Evaluation report",
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and the PNG plots; returns ``{file name: path}``.

    ``metrics`` is one :func:`compute_metrics` result, or ``{split name: result}`` for
    several splits. ``predictions`` (``{split: (y_true, probs)}``) enables the ROC and
    reliability plots.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_split = metrics if "per_class" not in metrics else {"evaluation": metrics}
    paths: dict[str, Path] = {}
    md = [f"# {title}", "", "Research use only, not for clinical diagnosis.", ""]
    md += [f"- {n}" for n in notes]
    if notes:
        md.append("")
    if history:
        paths["training_curves.png"] = plot_training_curves(history, out / "training_curves.png")
        md += ["![training curves](training_curves.png)", ""]
    headings = {"val": "Validation split", "test": "Test split", "train": "Training split"}
    for split, m in by_split.items():
        md.append(metrics_markdown(m, heading=headings.get(split, split.capitalize())))
        cm_name = f"confusion_matrix_{split}.png"
        paths[cm_name] = plot_confusion_matrix(m, out / cm_name, title=f"Confusion matrix ({split})")
        md += [f"![confusion matrix]({cm_name})", ""]
        if predictions and split in predictions:
            y, p = predictions[split]
            if len(y):
                roc_name, rel_name = f"roc_{split}.png", f"reliability_{split}.png"
                paths[roc_name] = plot_roc_curves(y, p, m["confusion_matrix"]["classes"], out / roc_name)
                paths[rel_name] = plot_reliability(y, p, out / rel_name)
                md += [f"![ROC curves]({roc_name}) ![reliability diagram]({rel_name})", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    paths["report.md"] = out / "report.md"
    payload = {"title": title, "notes": list(notes), "metrics": by_split, "history": history or {}}
    (out / "report.json").write_text(json.dumps(_json_safe(payload), indent=2) + "\n", encoding="utf-8")
    paths["report.json"] = out / "report.json"
    return paths


def coverage_line(result: dict[str, Any]) -> str:
    """The coverage sentence: "AI result on 66/68 images (coverage 97.1%); no AI result on 2 (...)"."""
    line = (
        f"AI result on {result['n_covered']}/{result['n_total']} images "
        f"(coverage {100 * (result['coverage'] or 0):.1f}%); no AI result on {result['n_abstained']}"
    )
    per_class = ", ".join(f"{c} {n}" for c, n in result.get("abstained_per_class", {}).items() if n)
    gates = ", ".join(f"{g} {n}" for g, n in result.get("abstained_by_gate", {}).items() if n)
    return (
        line
        + (f" (true class: {per_class}; gate: {gates})" if per_class else "")
        + "; the metrics are on the covered images"
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null; NumPy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Evaluating a bundle on labelled data


def evaluate_bundle(
    model_dir: Path | str,
    data: Path | str,
    class_map: dict[str, str] | None = None,
    batch_size: int = 32,
    progress: TrainingProgress | None = None,
    *,
    split: str | None = None,
    csv_kind: str = "auto",
    exclude: Sequence[str] = (),
    cache_dir: Path | str | None = None,
    cancel: threading.Event | None = None,
    report_dir: Path | str | None = None,
    group_by_folder: bool = False,
    lungs: Any = "auto",
) -> dict[str, Any]:
    """Evaluate the bundle at ``model_dir`` on the labelled images in ``data``.

    Images go through the bundle's own preprocessing. Dataset classes are matched to the
    model's classes by name (after ``class_map``); images of classes the model does not know
    are excluded and counted under ``excluded``. ``split`` keeps only that declared split
    ("test" of a ``train/``+``test/`` folder). Returns the schema of the module docstring.
    Every metric is also reported per source (``by_source``, with ``worst_source``) when the
    data names sources: a CSV ``source`` column, or ``group_by_folder`` for
    ``DATA/<source>/<Class>/...``.

    Each file goes through :class:`inference.predictor.Predictor` (``lungs`` as it takes them),
    so the abstain gate decides as in the app: the metrics are on the covered images, and
    ``coverage`` with the abstained counts says what was left out. ``cache_dir`` is accepted for
    older callers and not used (the gate reads every original file).
    """
    from inference.predictor import Predictor
    from training.datasets import discover
    from training.progress import check_cancel

    progress = progress or NullProgress()
    progress.on_stage("scanning", str(data))
    ds = discover(
        data,
        class_map,
        csv_kind=csv_kind,
        exclude=exclude,
        min_classes=1,
        min_per_class=1,
        group_by_folder=group_by_folder,
    )
    samples = ds.samples
    declared = sorted({s.split for s in samples if s.split})
    if declared and not split:
        progress.on_message(
            f"{data} declares the splits {', '.join(declared)}; evaluating all of them together "
            "(use --split test to evaluate only the test images)."
        )
    if split:
        samples = [s for s in samples if s.split == split]
        if not samples:
            raise EvaluationError(f"{data} has no images in a {split!r} split.")
    progress.on_stage("loading model", str(model_dir))
    predictor = Predictor(model_dir, lungs=lungs)
    info = predictor.info
    known = {c: i for i, c in enumerate(info.class_names)}
    lower = {c.lower(): c for c in info.class_names}
    usable, excluded = [], Counter()
    for s in samples:
        name = s.label if s.label in known else lower.get(s.label.lower())
        if name is None:
            excluded[s.label] += 1
        else:
            s.label = name
            usable.append(s)
    if excluded:
        progress.on_message(
            "Excluded (classes the model does not know): "
            + ", ".join(f"{c}: {n}" for c, n in sorted(excluded.items()))
            + f". The model's classes: {', '.join(info.class_names)}. Use --class-map to rename."
        )
    if not usable:
        raise EvaluationError(
            f"None of the classes in {data} ({', '.join(ds.classes)}) is one of the model's classes "
            f"({', '.join(info.class_names)}); use --class-map OLD=NEW to match them."
        )
    # Through the predictor, as the app sees each file: its preprocessing, calibration and the
    # abstain gate (which reads the original file's header and pixels, so no decoded cache).
    progress.on_stage("evaluating", f"{len(usable)} images")
    by_path = {str(s.path): s for s in usable}
    kept, probs_list, closed, skipped = [], [], [], list(ds.skipped)
    for r in predictor.predict_paths([str(s.path) for s in usable], batch_size=batch_size):
        check_cancel(cancel)
        if not r.ok or r.prediction is None:
            skipped.append((r.file, r.error))
            continue
        kept.append(by_path[r.file])
        probs_list.append(r.prediction.probs)
        closed.append(r.prediction.abstain_gates if r.prediction.abstained else None)
    if not kept:
        raise EvaluationError(f"None of the images in {data} could be read.")
    probs = np.stack(probs_list)
    y = np.asarray([known[s.label] for s in kept], dtype=np.int64)
    covered = np.asarray([r is None for r in closed])
    result = compute_metrics(y[covered], probs[covered], info.class_names)
    result.update(_coverage(y, probs, covered, closed, info.class_names))
    sources = [s.source for s in kept]
    if len({s for s in sources if s}) > 1:
        groups = np.asarray([s or "(unknown)" for s in sources])
        by_source = {}
        for g in sorted(set(groups.tolist())):  # each source's metrics on its covered images, and its coverage
            mine, cov = groups == g, covered & (groups == g)
            by_source[g] = compute_metrics(y[cov], probs[cov], info.class_names)
            kept_closed = [closed[i] for i in np.flatnonzero(mine)]
            by_source[g].update(_coverage(y[mine], probs[mine], covered[mine], kept_closed, info.class_names))
            del by_source[g]["all_images"]
        result["by_source"] = by_source
        worst = worst_group(result["by_source"])
        if worst:
            result["worst_source"] = {"source": worst[0], "accuracy": worst[1]}
    result["model"] = {
        "path": str(Path(model_dir)),
        "name": info.name,
        "version": info.version,
        "architecture": info.architecture,
    }
    result["data"] = str(data)
    result["excluded"] = dict(sorted(excluded.items()))
    result["skipped"] = [list(t) for t in skipped]
    result = _json_safe(result)
    if report_dir is not None:
        write_report(
            result,
            report_dir,
            title=f"Evaluation of {info.display_name} on {data}",
            predictions={"evaluation": (y[covered], probs[covered])},
        )
    return result


def _coverage(
    y: np.ndarray,
    probs: np.ndarray,
    covered: np.ndarray,
    closed: Sequence[tuple[str, ...] | None],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Coverage, the abstained count per true class and per gate (``closed``: the gates that
    closed for each film, None when it got a result), and the metrics of every image."""
    n, n_covered = len(y), int(covered.sum())
    gates: Counter[str] = Counter({"scope": 0, "lungs": 0, "ood": 0})
    for names in closed:
        gates.update(names or ())
    everything = compute_metrics(y, probs, class_names)
    return {
        "coverage": n_covered / n if n else None,
        "n_total": int(n),
        "n_covered": n_covered,
        "n_abstained": int(n - n_covered),
        "abstained_per_class": {c: int(np.sum((y == i) & ~covered)) for i, c in enumerate(class_names)},
        "abstained_by_gate": dict(gates),
        "all_images": {k: everything[k] for k in ("accuracy", "correct", "n_images", "ece")},
    }
