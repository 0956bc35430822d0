"""Temperature scaling of a bundle's probabilities (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017).

A network trained with cross-entropy is often over-confident: of the films it calls "99%",
fewer than 99% are right. One number, the temperature ``T`` fitted on validation data after
training (``training.calibration``), divides the logits: ``softmax(z / T)``. ``T > 1``
softens over-confident scores; the predicted class never changes. The bundle stores it in
``model.json`` (``calibration.temperature``); a bundle without it is used as it always was.

The networks output probabilities, not logits, so the scaling is applied to their logarithm:
``log softmax(z) = z - logsumexp(z)`` differs from ``z`` by a constant per image, which a
softmax ignores, so ``softmax(log(p) / T) == softmax(z / T)`` exactly, up to float32
underflow of probabilities below 1e-38 (logit gaps over 87, where the result is 0 either way
unless ``T`` exceeds about 4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["apply_temperature", "temperature_of", "softmax"]

_TINY = float(np.finfo(np.float32).tiny)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``(..., K)`` rescaled by ``temperature``, same shape and dtype (float32
    for float32 input); ``temperature == 1`` returns the input unchanged."""
    probs = np.asarray(probs)
    if temperature == 1.0:
        return probs
    out = softmax(np.log(np.maximum(probs.astype(np.float64), _TINY)), temperature)
    return out.astype(probs.dtype if probs.dtype.kind == "f" else np.float32)


def temperature_of(calibration: dict[str, Any] | None) -> float:
    """The temperature of a bundle's ``calibration`` record, 1.0 when it has none."""
    if not calibration:
        return 1.0
    return float(calibration.get("temperature", 1.0))
