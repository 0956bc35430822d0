"""Fitting a model's out-of-distribution scorer (:mod:`inference.ood`) on its own features.

After training (``training.train``) and in ``main.py calibrate``, the penultimate features of
the training images give the class means and the shared covariance; the validation images'
distances give the threshold (their ``quantile``). The scorer is saved as ``ood.npz`` inside the
bundle through the one atomic save, and ``model.json`` records it::

    "ood": {"file": "ood.npz", "quantile": 0.99, "threshold": 41.7,
            "validation_abstain_rate": 0.0104, "fitted_on": "...", "n_train": 9229, "n_val": 1629}
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.ood import OOD_FILE, FeatureGaussians, feature_layer, fit_feature_gaussians
from inference.preprocess import PreprocessConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from training.datasets import Sample

__all__ = ["OOD_QUANTILE", "logits_and_features", "fit_ood", "recreate_split", "features_cache_path"]

OOD_QUANTILE = 0.99  # about 1 in 100 in-distribution films turned away


def logits_and_features(
    model: keras.Model, x_uint8: np.ndarray, config: PreprocessConfig, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pre-softmax scores ``(N, K)`` and penultimate features ``(N, D)`` of preprocessed uint8
    images, in one pass. Features are None when the network has no final Dense layer (then
    the logits come from :func:`training.calibration.model_logits`)."""
    import keras

    from training.calibration import model_logits
    from training.pipeline import make_tf_dataset

    layer = feature_layer(model)
    if layer is None or len(layer.input.shape) != 2:
        return model_logits(model, x_uint8, config, batch_size), None
    if len(x_uint8) == 0:
        return np.zeros((0, int(layer.output.shape[-1]))), np.zeros((0, int(layer.input.shape[-1])))
    head = keras.Model(model.inputs[0], [layer.output, layer.input])
    ds = make_tf_dataset(x_uint8, None, config, batch_size, training=False)
    out, features = head.predict(ds, verbose=0)
    if layer.name == "logits":
        logits = np.asarray(out, np.float64)
    else:  # a final Dense with its own softmax: its log is the logits up to a constant per image
        logits = np.log(np.maximum(np.asarray(out, np.float64), np.finfo(np.float32).tiny))
    return logits, np.asarray(features, np.float32)


def fit_ood(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    fitted_on: str,
    quantile: float = OOD_QUANTILE,
) -> tuple[FeatureGaussians, dict[str, Any]]:
    """The scorer and its ``model.json`` record (the share of validation images it turns away)."""
    scorer = fit_feature_gaussians(train_features, train_labels, val_features, quantile)
    rate = float(np.mean(scorer.is_outlier(val_features)))
    record = {
        "file": OOD_FILE,
        "quantile": float(quantile),
        "threshold": float(scorer.threshold),
        "validation_abstain_rate": round(rate, 4),
        "fitted_on": fitted_on,
        "n_train": int(len(train_features)),
        "n_val": int(len(val_features)),
    }
    return scorer, record


def recreate_split(samples: list[Sample], training: dict[str, Any]) -> dict[str, list[Sample]]:
    """The train/val/test split a bundle was trained with, from its ``model.json`` ``training.config``
    (the same functions, fractions and seed as ``training.train``), so that a later calibration
    fits on that model's validation images only."""
    from training.splits import hold_out_sources, split_dataset

    config = training.get("config") or {}
    pool, held_out = hold_out_sources(samples, tuple(config.get("val_sources") or ()))
    splits = split_dataset(
        pool,
        float(config.get("val_fraction", 0.15)),
        float(config.get("test_fraction", 0.0)),
        int(config.get("seed", 0)),
    )
    splits["val"].extend(held_out)
    return splits


def features_cache_path(cache_dir: Path | str, model_file: Path, paths: Sequence[str]) -> Path:
    """Where the logits and features of ``paths`` under the network in ``model_file`` are kept."""
    h = hashlib.sha256(Path(model_file).read_bytes())
    for p in paths:
        h.update(f"{p}\n".encode())
    return Path(cache_dir) / f"features-{h.hexdigest()[:24]}.npz"
