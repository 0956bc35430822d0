"""Adapting the model to a hospital's own films, safely: the reads become data, a gate decides.

The radiologist's verdicts (the reader's class, never the AI's) in the sidecar store are the
labels. :func:`samples_from_reads` turns them into training samples; :func:`split_local` holds at
least a fifth of the patients out as the *check set*, never trained on. After a fine-tune,
:func:`gate` compares the current and the new model on the check set with a paired bootstrap:
the new model is offered only when its gain is larger than its uncertainty (the 95% interval of
the difference in balanced accuracy lies above zero), and when it is not worse than the current
one beyond ``tolerance`` on a reference set (forgetting what it knew).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.sidecar import SidecarStore
from training.samples import Sample
from training.splits import split_dataset

__all__ = [
    "MIN_CHECK_FRACTION",
    "GateResult",
    "balanced_accuracy",
    "gate",
    "paired_bootstrap",
    "samples_from_reads",
    "split_local",
]

MIN_CHECK_FRACTION = 0.2
DEFAULT_TOLERANCE = 0.02


def samples_from_reads(store: SidecarStore, class_names: Sequence[str]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """One sample per read film whose reader's class is one of the model's; the rest listed with why."""
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for key in store.film_keys():
        try:
            sidecar = store.load(key)
        except Exception as exc:  # a damaged sidecar is set aside by the store; say so and go on
            skipped.append((key, str(exc)))
            continue
        verdict = sidecar.verdict
        if verdict is None or verdict.reader_class is None:
            continue
        if verdict.reader_class not in class_names:
            skipped.append((sidecar.file or key, f"reader's class '{verdict.reader_class}' is not one of the model's"))
            continue
        if not sidecar.file or not Path(sidecar.file).is_file():
            skipped.append((sidecar.file or key, "the film is no longer where it was read"))
            continue
        patient = _patient_id(Path(sidecar.file))
        samples.append(
            Sample(Path(sidecar.file), verdict.reader_class, patient_id=patient, source="local", meta={"key": key})
        )
    return samples, skipped


def _patient_id(path: Path) -> str:
    """The DICOM Patient ID (read from the header only), or "" for a film that names none."""
    from inference.loading import import_pydicom, sniff_format

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if sniff_format(head) != "DICOM":
            return ""
        import_pydicom()
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(ds.get("PatientID", "") or "").strip()
    except (OSError, ValueError, TypeError, AttributeError):
        return ""


def split_local(
    samples: list[Sample], check_fraction: float = MIN_CHECK_FRACTION, seed: int = 0
) -> dict[str, list[Sample]]:
    """Patient-level, class-stratified split: ``train`` and ``val`` to fine-tune, ``test`` to check."""
    if check_fraction < MIN_CHECK_FRACTION:
        raise ValueError(f"at least {MIN_CHECK_FRACTION:.0%} of the films must be held out for checking")
    for s in samples:
        s.split = ""
    return split_dataset(samples, val_fraction=0.15, test_fraction=check_fraction, seed=seed)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [float(np.mean(pred[y == c] == c)) for c in range(n_classes) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def paired_bootstrap(
    y: np.ndarray,
    pred_current: np.ndarray,
    pred_new: np.ndarray,
    n_classes: int,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, 2.5th, 97.5th percentile) of new minus current balanced accuracy over resamples."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y, pred_current, pred_new))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError("labels and both models' predictions must be the same non-empty length")
    delta = balanced_accuracy(y, b, n_classes) - balanced_accuracy(y, a, n_classes)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        diffs[i] = balanced_accuracy(y[idx], b[idx], n_classes) - balanced_accuracy(y[idx], a[idx], n_classes)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(delta), float(lo), float(hi)


@dataclass
class GateResult:
    accept: bool
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)


def gate(
    check: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    n_boot: int = 2000,
    seed: int = 0,
) -> GateResult:
    """Decide whether the new model may be offered. Each tuple is (labels, current's, new's predictions)."""
    reasons: list[str] = []
    delta, lo, hi = paired_bootstrap(*check, n_classes=n_classes, n_boot=n_boot, seed=seed)
    figures: dict[str, Any] = {
        "check": {"n": int(len(check[0])), "delta_balanced_accuracy": delta, "ci95": [lo, hi]},
        "tolerance": tolerance,
    }
    better = lo > 0.0
    reasons.append(
        f"Local check set ({len(check[0])} films): balanced accuracy {delta:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}); "
        + ("better beyond its uncertainty." if better else "not better beyond its uncertainty.")
    )
    kept = True
    if reference is not None and len(reference[0]):
        r_delta, r_lo, r_hi = paired_bootstrap(*reference, n_classes=n_classes, n_boot=n_boot, seed=seed)
        figures["reference"] = {"n": int(len(reference[0])), "delta_balanced_accuracy": r_delta, "ci95": [r_lo, r_hi]}
        kept = r_delta >= -tolerance
        reasons.append(
            f"Reference set ({len(reference[0])} films): balanced accuracy {r_delta:+.3f} "
            f"(95% CI {r_lo:+.3f} to {r_hi:+.3f}); "
            + (f"within the tolerance of {tolerance:.2f}." if kept else f"worse than the tolerance of {tolerance:.2f}.")
        )
    else:
        reasons.append("No reference set: forgetting was not checked.")
    return GateResult(accept=better and kept, reasons=reasons, figures=figures)
