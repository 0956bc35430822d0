"""Fitting the temperature of a model on validation data, and calibrating an existing bundle.

The temperature ``T`` minimises the negative log-likelihood of the validation labels under
``softmax(logits / T)``. As a function of ``1 / T`` that NLL is convex (a log-sum-exp of
linear functions minus a linear one), so a golden-section search over a bounded interval
finds its minimum; no optimiser library is needed. Applying it is
:func:`inference.calibration.apply_temperature`'s job, everywhere a probability is shown.

    python main.py calibrate MODEL_DIR DATA --out NEW_MODEL_DIR [--split val] [--class-map ...]

writes a NEW bundle (the same network, ``calibration`` added to ``model.json``, and the
out-of-distribution scorer ``ood.npz`` with its ``ood`` record, see :mod:`training.ood_fit`);
the original is never modified. ``--model-split`` recreates the train/validation split the
model was trained with: the temperature and the OOD threshold are then fitted on its validation
images, the OOD class means on its training images.
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
    model_split: bool = False,
    version: str | None = None,
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
    known = {c: i for i, c in enumerate(info.class_names)}
    if model_split:
        from training.ood_fit import recreate_split

        try:
            recreate_split(ds.samples, info.training)  # sets each sample's split as training did
        except ValueError as exc:
            raise CalibrationError(f"The model's split cannot be recreated on {data}: {exc}") from None
        split = "val"
    samples = [s for s in ds.samples if split is None or s.split == split]
    usable = [s for s in samples if s.label in known]
    if len(usable) < MIN_IMAGES:
        where = f"{data}" + (f" (split {split})" if split else "")
        raise CalibrationError(
            f"{where} has {len(usable)} images of the model's classes ({', '.join(info.class_names)}); "
            f"calibration needs at least {MIN_IMAGES}. Use --class-map to rename classes."
        )
    # With the model's split, every image is decoded at once (one cache entry for the whole set,
    # as training made it); the training images give the OOD class means.
    every = [s for s in ds.samples if s.label in known] if model_split else usable
    x_all, kept_all, _ = load_arrays(every, info.preprocessing, cache_dir, progress, cancel)
    kept = [s for s in kept_all if s.split == split] if model_split else kept_all
    if len(kept) < MIN_IMAGES:
        raise CalibrationError(f"only {len(kept)} of the images in {data} could be read.")
    progress.on_stage("calibrating", f"{len(kept_all)} images")
    logits_all, features_all = _cached_logits_and_features(
        model, src / MODEL_FILE, x_all, [str(s.path) for s in kept_all], info.preprocessing, batch_size, cache_dir
    )
    del x_all
    rows = np.asarray([i for i, s in enumerate(kept_all) if s.split == split], np.int64) if model_split else None
    logits = logits_all[rows] if rows is not None else logits_all
    labels = np.asarray([known[s.label] for s in kept], np.int64)
    fitted_on = f"{data}" + (" (the model's own validation split)" if model_split else "")
    fitted_on += f" split {split}" if split and not model_split else ""
    fitted_on += f" ({len(kept)} images)"
    record = calibration_record(logits, labels, fitted_on)
    info.calibration = record
    if version:
        info.version = version
    extra: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="cxr-calibrate-") as tmp:
        if features_all is not None:
            scorer, info.ood = _fit_scorer(features_all, kept_all, known, rows, fitted_on, model_split)
            extra["ood.npz"] = scorer.save(tmp)
        # Keep the original's report and any other files beside the network.
        for path in src.rglob("*"):
            rel = path.relative_to(src)
            if path.is_file() and str(rel) not in (MODEL_FILE, INFO_FILE, "ood.npz"):
                copy = Path(tmp) / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                extra[rel.as_posix()] = copy
        written = write_bundle(model, info, out, extra_files=extra)
    return written, record


def _cached_logits_and_features(
    model: keras.Model,
    model_file: Path,
    x: np.ndarray,
    paths: list[str],
    config: PreprocessConfig,
    batch_size: int,
    cache_dir: Path | str | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and penultimate features of ``x`` (kept in ``cache_dir`` for the same network and files)."""
    from training.ood_fit import features_cache_path, logits_and_features

    cache = features_cache_path(cache_dir, model_file, paths) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if len(data["logits"]) == len(paths):
                return data["logits"], (data["features"] if data["features"].size else None)
    logits, features = logits_and_features(model, x, config, batch_size)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            feats = features if features is not None else np.zeros((0,), np.float32)
            np.savez(cache, logits=logits, features=feats, paths=np.asarray(paths))
        except OSError:
            pass  # the cache only saves time
    return logits, features


def _fit_scorer(
    features: np.ndarray,
    kept: list[Any],
    known: dict[str, int],
    val_rows: np.ndarray | None,
    fitted_on: str,
    model_split: bool,
) -> tuple[Any, dict[str, Any]]:
    """Class means on the model's training images (with its split), else on a random half of
    the given images with the threshold from the other half (never fitted and thresholded on
    the same images, which would make the threshold too tight)."""
    from training.ood_fit import fit_ood

    labels = np.asarray([known[s.label] for s in kept], np.int64)
    if model_split:
        train_rows = np.asarray([i for i, s in enumerate(kept) if s.split == "train"], np.int64)
        if len(train_rows) < 2:
            raise CalibrationError("the model's split has no training images to fit the OOD scorer on.")
        assert val_rows is not None
        return fit_ood(features[train_rows], labels[train_rows], features[val_rows], fitted_on)
    order = np.random.default_rng(0).permutation(len(kept))
    half = len(order) // 2
    a, b = order[:half], order[half:]
    return fit_ood(features[a], labels[a], features[b], f"{fitted_on}: class means on one half, threshold on the other")
