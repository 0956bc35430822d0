"""Shortcut probes: is a classifier reading the disease, or the hospital it came from?

Two measurements (issue 7), both on images the model was not trained on:

* **Source probe.** A linear classifier is trained on the model's penultimate features to
  predict the image's *source* (hospital, data set), separately within each class, and
  scored on held-out images by balanced accuracy. Within one class the disease is the same,
  so what separates the sources is the scanner, the text markers, the patient's age: if a
  linear read-out finds the source easily, the model's features carry it, and the model
  can use it. Chance is ``1 / number of sources``.
* **Lungs masked out.** The lung fields are painted over with the image's mean gray and the
  model asked again. The disease signs are in the lungs; a model that still classifies
  well without them is classifying by something else.

Everything here is NumPy and Keras; no Qt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["feature_extractor", "fit_softmax", "source_probe", "mask_lungs", "ProbeResult"]


def feature_extractor(model: keras.Model) -> keras.Model:
    """The model up to the input of its last Dense layer: the features the classes are read from.

    (The last layer itself may be a separate softmax activation, whose input would be the
    class logits, not features.)
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"{model.name} has no Dense layer to read features from")
    return keras.Model(model.input, dense[-1].input)


def fit_softmax(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, steps: int = 300, lr: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent: ``(W, b)``.

    Features should be standardised. Classes are weighted equally (inverse frequency), so the
    probe cannot score by always naming the biggest source.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    n, d = x.shape
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sample_w = (n / (n_classes * np.maximum(counts, 1)))[y]
    onehot = np.eye(n_classes)[y]
    w = np.zeros((d, n_classes))
    b = np.zeros(n_classes)
    for _ in range(steps):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sample_w[:, None] / n
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    return w, b


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [float(np.mean(pred[y == k] == k)) for k in range(n_classes) if np.any(y == k)]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass
class ProbeResult:
    """How well the sources of one class can be told apart from the features."""

    label: str
    sources: list[str]
    n_train: int
    n_test: int
    balanced_accuracy: float
    chance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.label,
            "sources": self.sources,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "chance": round(self.chance, 4),
        }


def source_probe(
    features: np.ndarray,
    labels: Sequence[str],
    sources: Sequence[str],
    min_per_source: int = 10,
    test_fraction: float = 0.4,
    seed: int = 0,
) -> list[ProbeResult]:
    """Per class: can a linear probe tell the class's sources apart? (see the module docstring)

    Sources with fewer than ``min_per_source`` images of a class are left out of that class's
    probe; classes with fewer than two such sources get no probe. Each source is split
    ``test_fraction`` for scoring, the rest for fitting.
    """
    features = np.asarray(features, np.float64)
    labels_arr, sources_arr = np.asarray(labels), np.asarray(sources)
    rng = np.random.default_rng(seed)
    results = []
    for label in sorted(set(labels_arr.tolist())):
        in_class = labels_arr == label
        names = sorted(
            s for s in set(sources_arr[in_class].tolist()) if np.sum(in_class & (sources_arr == s)) >= min_per_source
        )
        if len(names) < 2:
            continue
        train_idx, test_idx, y_train, y_test = [], [], [], []
        for k, name in enumerate(names):
            idx = np.flatnonzero(in_class & (sources_arr == name))
            rng.shuffle(idx)
            n_test = max(1, int(round(test_fraction * len(idx))))
            test_idx += idx[:n_test].tolist()
            train_idx += idx[n_test:].tolist()
            y_test += [k] * n_test
            y_train += [k] * (len(idx) - n_test)
        xtr, xte = features[train_idx], features[test_idx]
        mean, std = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
        w, b = fit_softmax((xtr - mean) / std, np.asarray(y_train), len(names))
        pred = np.argmax(((xte - mean) / std) @ w + b, axis=1)
        results.append(
            ProbeResult(
                label=str(label),
                sources=names,
                n_train=len(train_idx),
                n_test=len(test_idx),
                balanced_accuracy=_balanced_accuracy(np.asarray(y_test), pred, len(names)),
                chance=1.0 / len(names),
            )
        )
    return results


def mask_lungs(gray: np.ndarray, mask: np.ndarray, grow: float = 0.03) -> np.ndarray:
    """``gray`` with the lung ``mask`` (grown by ``grow`` of the image side) filled with the
    mean gray of the rest of the image, edges softened so the hole itself is not a feature."""
    gray = np.asarray(gray)
    mask = np.asarray(mask, dtype=np.uint8)
    h, w = mask.shape
    r = max(1, int(round(grow * max(h, w))))
    grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    if not grown.any():
        return gray.copy()
    fill = float(gray[~grown].mean()) if (~grown).any() else float(gray.mean())
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), sigmaX=max(1.0, r / 2))
    out = gray.astype(np.float32) * (1 - soft) + fill * soft
    return np.clip(np.round(out), 0, np.iinfo(gray.dtype).max if gray.dtype.kind == "u" else 255).astype(gray.dtype)
