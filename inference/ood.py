"""How far a film lies from what the model was trained on, in the model's own feature space.

Lee et al. (2018): fit one Gaussian per class with a shared covariance to the penultimate
features of the training images; a film's score is its smallest Mahalanobis distance to a class
mean. The threshold is a high percentile of the validation images' scores, so about 1% of
in-distribution films are turned away while a cat, a knee or a page of text lands far outside.
Fitted when a model is trained, stored beside it (``ood.npz``: plain arrays, no pickle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "OOD_FILE",
    "FeatureGaussians",
    "fit_feature_gaussians",
    "load_feature_gaussians",
    "feature_layer",
    "feature_tensor",
    "with_features",
    "ood_reason",
]

OOD_FILE = "ood.npz"
_SHRINKAGE = 0.1  # of the correlations, towards the diagonal: a stable inverse with few films per feature


@dataclass(frozen=True)
class FeatureGaussians:
    """Class means, the shared precision matrix and the distance above which a film is out of scope."""

    means: np.ndarray  # (classes, features)
    precision: np.ndarray  # (features, features)
    threshold: float
    quantile: float

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """The smallest Mahalanobis distance of each row of ``features`` (N, D) to a class mean."""
        x = np.asarray(features, np.float64).reshape(-1, self.n_features)
        best = np.full(len(x), np.inf)
        for mean in self.means:
            d = x - mean
            best = np.minimum(best, np.einsum("ij,jk,ik->i", d, self.precision, d))
        return np.sqrt(np.maximum(best, 0.0))

    def is_outlier(self, features: np.ndarray) -> np.ndarray:
        return self.distances(features) > self.threshold

    def save(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / OOD_FILE
        with open(path, "wb") as fh:
            np.savez(
                fh,
                means=self.means.astype(np.float32),
                precision=self.precision.astype(np.float32),
                threshold=np.float64(self.threshold),
                quantile=np.float64(self.quantile),
            )
        return path


def fit_feature_gaussians(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    quantile: float = 0.99,
) -> FeatureGaussians:
    """Class-conditional Gaussians on the training features; the threshold from the validation ones."""
    x = np.asarray(train_features, np.float64)
    y = np.asarray(train_labels).astype(int)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError("need one row of features per training label, at least two rows")
    if not 0.5 <= quantile < 1.0:
        raise ValueError("quantile must lie in [0.5, 1)")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / max(len(x) - len(classes), 1)
    variances = np.diag(cov).copy()
    variances += 1e-6 * (variances.mean() or 1.0)  # a feature that never varies must not make cov singular
    cov = (1 - _SHRINKAGE) * cov + _SHRINKAGE * np.diag(variances)
    gaussians = FeatureGaussians(means, np.linalg.inv(cov), np.inf, quantile)
    val = np.asarray(val_features, np.float64)
    if len(val) == 0:
        raise ValueError("need validation features to set the threshold")
    threshold = float(np.quantile(gaussians.distances(val), quantile))
    return FeatureGaussians(means, gaussians.precision, threshold, quantile)


def load_feature_gaussians(folder: str | os.PathLike[str]) -> FeatureGaussians | None:
    """The stored scorer of a model folder, or None when the model has none (older models)."""
    path = Path(folder) / OOD_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        means, precision = data["means"].astype(np.float64), data["precision"].astype(np.float64)
        threshold, quantile = float(data["threshold"]), float(data["quantile"])
    d = means.shape[1] if means.ndim == 2 else -1
    if means.ndim != 2 or precision.shape != (d, d) or not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"{path.name} is damaged (shapes {means.shape} and {precision.shape})")
    return FeatureGaussians(means, precision, threshold, quantile)


def feature_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The classifier's final Dense layer (``logits`` in every architecture built here, else the
    last Dense): its input is the penultimate feature vector the scorer reads. None: no such layer."""
    import keras

    try:
        return model.get_layer("logits")
    except ValueError:
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        return dense[-1] if dense else None


def with_features(model: keras.Model) -> keras.Model | None:
    """The same network with a second output: the input of its final Dense layer, ``(N, D)``.

    One forward pass then gives the probabilities and the features (no weights are copied).
    None when the network has no single flat feature vector before a final Dense layer.
    """
    import keras

    features = feature_tensor(model)
    if features is None:
        return None
    return keras.Model(model.inputs[0], [model.outputs[0], features], name=f"{model.name}_with_features")


def feature_tensor(model: keras.Model) -> Any:
    """The input of the model's final Dense layer when it is one flat vector per image, else None."""
    layer = feature_layer(model)
    if layer is None:
        return None
    try:
        features = layer.input
    except (AttributeError, ValueError):  # a layer used twice has no single input
        return None
    return features if len(features.shape) == 2 else None


def ood_reason(distance: float, threshold: float) -> str:
    """The sentence a reader sees when the scorer turns a film away."""
    return (
        "The image lies outside what the model was trained on "
        f"(feature distance {distance:.1f}, above its limit {threshold:.1f}); its answer would not be reliable."
    )
