"""Fitting the temperature of a model on validation data, and calibrating an existing bundle.

The temperature ``T`` minimises the negative log-likelihood of the validation labels under
``softmax(logits / T)``. As a function of ``1 / T`` that NLL is convex (a log-sum-exp of
linear functions minus a linear one), so a golden-section search over a bounded interval
finds its minimum; no optimiser library is needed. Applying it is
:func:`inference.calibration.apply_temperature`'s job, everywhere a probability is shown.

    python main.py calibrate MODEL_DIR DATA --out NEW_MODEL_DIR [--split val] [--class-map ...]

writes a NEW bundle (the same network, ``calibration`` added to ``model.json``); the
original is never modified.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.calibration import softmax
from inference.preprocess import PreprocessConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from training.progress import TrainingProgress

__all__ = [
    "CalibrationError",
    "T_RANGE",
    "nll",
    "fit_temperature",
    "calibration_record",
    "model_logits",
    "calibrate_bundle",
]

# Temperatures searched: 0.05 (sharpen a timid model 20x) to 20 (soften an over-confident one).
T_RANGE = (0.05, 20.0)
# Fewer images than this fit noise: on the published benchmark a temperature fitted on 37
# validation images (2 errors) made the test ECE worse (0.064 -> 0.103).
MIN_IMAGES = 100


class CalibrationError(Exception):
    """Calibration cannot be done as asked; the message says why."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    y = np.asarray(labels, dtype=np.int64)
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, t_range: tuple[float, float] = T_RANGE, tol: float = 1e-5
) -> float:
    """The temperature in ``t_range`` that minimises :func:`nll` (golden-section search on 1/T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (N, K) and N labels, got {logits.shape} and {labels.shape}")
    lo, hi = 1.0 / t_range[1], 1.0 / t_range[0]  # search beta = 1/T

    def f(beta: float) -> float:
        return nll(logits, labels, 1.0 / beta)

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * max(1.0, abs(c)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    beta = (a + b) / 2.0
    # The ends of the interval are candidates too (a convex NLL may be smallest at a bound).
    best = min((beta, lo, hi), key=f)
    return float(1.0 / best)


def _ece(labels: np.ndarray, probs: np.ndarray) -> float:
    from training.evaluate import compute_metrics

    return float(compute_metrics(labels, probs, [str(i) for i in range(probs.shape[1])])["ece"])


def calibration_record(logits: np.ndarray, labels: np.ndarray, fitted_on: str) -> dict[str, Any]:
    """Fit the temperature and describe it as ``model.json`` stores it (with NLL and ECE
    before and after, on the same images)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < MIN_IMAGES:
        raise CalibrationError(f"calibration needs at least {MIN_IMAGES} labelled images; {len(labels)} given.")
    if np.all(np.asarray(logits).argmax(axis=1) == labels):
        # Without a single error the NLL keeps falling as T -> 0: any "fitted" temperature
        # would be the search bound, claiming certainty from a sample that cannot show it.
        raise CalibrationError(
            f"the model classifies all {len(labels)} calibration images correctly, so no temperature can be "
            "estimated from them; calibrate on more (or harder) images it was not trained on."
        )
    t = fit_temperature(logits, labels)
    return {
        "temperature": round(t, 4),
        "fitted_on": fitted_on,
        "n_images": int(len(labels)),
        "nll_before": round(nll(logits, labels, 1.0), 4),
        "nll_after": round(nll(logits, labels, t), 4),
        "ece_before": round(_ece(labels, softmax(logits)), 4),
        "ece_after": round(_ece(labels, softmax(logits, t)), 4),
    }


def model_logits(model: keras.Model, x_uint8: np.ndarray, config: PreprocessConfig, batch_size: int = 32) -> np.ndarray:
    """Pre-softmax scores ``(N, K)`` of preprocessed uint8 images: the ``logits`` layer where the
    network has one (every architecture built here), else the log of its probabilities
    (equal up to a constant per image, which temperature scaling ignores)."""
    import keras

    from training.pipeline import predict_arrays

    try:
        head = keras.Model(model.inputs[0], model.get_layer("logits").output)
    except ValueError:
        probs = predict_arrays(model, x_uint8, config, batch_size)
        return np.log(np.maximum(probs.astype(np.float64), np.finfo(np.float32).tiny))
    return predict_arrays(head, x_uint8, config, batch_size).astype(np.float64)


def calibrate_bundle(
    model_dir: Path | str,
    data: Path | str,
    out_dir: Path | str,
    *,
    class_map: dict[str, str] | None = None,
    split: str | None = None,
    csv_kind: str = "auto",
    batch_size: int = 32,
    cache_dir: Path | str | None = None,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fit a temperature for the bundle at ``model_dir`` on the labelled images of ``data``
    (only its ``split`` when given) and write the calibrated copy to ``out_dir``, which must
    not exist. Returns the new bundle's folder and its calibration record.

    Use images the model was not trained on (its validation split, or new data): the model
    is over-confident on its training images, which would make ``T`` too small.
    """
    from inference.bundle import INFO_FILE, MODEL_FILE, BundleError, load_bundle, write_bundle
    from training.datasets import discover
    from training.pipeline import load_arrays
    from training.progress import NullProgress

    progress = progress or NullProgress()
    src, out = Path(model_dir).resolve(), Path(out_dir).resolve()
    if out == src:
        raise CalibrationError("--out must be a new folder: the calibrated model never replaces the original.")
    if out.exists():
        raise CalibrationError(f"{out} already exists; choose a new folder for the calibrated model.")
    try:
        model, info = load_bundle(src)
    except BundleError as exc:
        raise CalibrationError(str(exc)) from None
    progress.on_stage("scanning", str(data))
    ds = discover(data, class_map, csv_kind=csv_kind, min_classes=1, min_per_class=1)
    samples = [s for s in ds.samples if split is None or s.split == split]
    known = {c: i for i, c in enumerate(info.class_names)}
    usable = [s for s in samples if s.label in known]
    if len(usable) < MIN_IMAGES:
        where = f"{data}" + (f" (split {split})" if split else "")
        raise CalibrationError(
            f"{where} has {len(usable)} images of the model's classes ({', '.join(info.class_names)}); "
            f"calibration needs at least {MIN_IMAGES}. Use --class-map to rename classes."
        )
    x, kept, _ = load_arrays(usable, info.preprocessing, cache_dir, progress, cancel)
    if len(kept) < MIN_IMAGES:
        raise CalibrationError(f"only {len(kept)} of the images in {data} could be read.")
    progress.on_stage("calibrating", f"{len(kept)} images")
    logits = model_logits(model, x, info.preprocessing, batch_size)
    labels = np.asarray([known[s.label] for s in kept], np.int64)
    fitted_on = f"{data}" + (f" split {split}" if split else "") + f" ({len(kept)} images)"
    record = calibration_record(logits, labels, fitted_on)
    info.calibration = record
    extra: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="cxr-calibrate-") as tmp:
        # Keep the original's report and any other files beside the network.
        for path in src.rglob("*"):
            rel = path.relative_to(src)
            if path.is_file() and str(rel) not in (MODEL_FILE, INFO_FILE):
                copy = Path(tmp) / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                extra[rel.as_posix()] = copy
        written = write_bundle(model, info, out, extra_files=extra)
    return written, record
