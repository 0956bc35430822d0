"""Grad-CAM and Grad-CAM++ for the Keras classifiers of this app.

Both methods weight the feature maps of a convolutional layer by the gradient of a class
score. The score is the class's **pre-softmax** value (the ``logits`` layer): once a
softmax saturates, the gradient of a probability is almost zero and the map turns to
noise. One compiled pass returns the model's probabilities and the maps together, so
"predict and explain" costs one forward and one backward pass.

Maps come out on the feature grid of the target layer (7x7 for a 224 px input on most
backbones), normalised to [0, 1] per image; an image whose gradients vanish gets an
all-zero map, never NaN. Putting a map back on the original image is
:meth:`inference.preprocess.Geometry.to_original`'s job.

An ensemble bundle (:mod:`training.ensemble`) averages several networks with one additive
head, so each member's share of the class score flows through its own last convolution.
:class:`CamEngine` then takes several target layers: one tape gives every layer's gradient,
and the map is the mean of the per-layer maps over the model input (see :func:`combine_maps`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["METHODS", "CamEngine", "cam_engine", "gradcam", "upsample", "combine_maps", "normalise_maps"]

METHODS = ("gradcam", "gradcam++")
LOGITS_LAYER = "logits"
# Maps whose maximum is below this are treated as "no evidence" and returned as zeros,
# rather than amplifying float noise to full scale.
_EPS = 1e-8


def _score_tensor(model: keras.Model) -> tuple[Any, bool]:
    """The tensor to differentiate and whether it holds probabilities (then its log is used)."""
    try:
        return model.get_layer(LOGITS_LAYER).output, False
    except ValueError:
        pass
    last = model.layers[-1]
    if type(last).__name__ == "Activation" and getattr(last.activation, "__name__", "") == "softmax":
        return last.input, False
    # A softmax folded into the last Dense: log-probabilities saturate far less than probabilities.
    return model.outputs[0], True


class CamEngine:
    """A compiled Grad-CAM pass for one model and one or several target layers.

    Build it once (see :func:`cam_engine`); :meth:`run` then takes a batch and returns the
    probabilities, the class each map explains and the maps. With one layer the maps lie on
    that layer's feature grid; with several (an ensemble) on the model input's grid.
    """

    def __init__(self, model: keras.Model, layer_name: str | Sequence[str]):
        import keras
        import tensorflow as tf

        # No reference to ``model`` itself: the engine cache below is keyed weakly on it.
        self.n_classes = int(model.outputs[0].shape[-1])
        names = [layer_name] if isinstance(layer_name, str) else list(layer_name)
        if not names:
            raise ValueError("Grad-CAM needs at least one target layer.")
        if len(set(names)) != len(names):
            raise ValueError(f"Grad-CAM target layers named twice: {names}")
        self.layer_names = tuple(names)
        self.layer_name = names[0]
        targets = []
        for name in names:
            target = model.get_layer(name)  # ValueError names the missing layer
            if len(target.output.shape) != 4:
                raise ValueError(f"Grad-CAM needs a layer with a spatial output; {name!r} has {target.output.shape}")
            targets.append(target.output)
        score, score_is_prob = _score_tensor(model)
        if len(model.inputs) != 1:
            raise ValueError(f"Grad-CAM expects a model with one input; {model.name} has {len(model.inputs)}")
        # The penultimate features (the OOD scorer's input, inference.ood.with_features) come out of
        # the same forward pass, so "predict and explain" needs no second pass for them.
        from inference.ood import feature_tensor

        features = feature_tensor(model)
        self.has_features = features is not None
        outputs = [*targets, score, model.outputs[0]] + ([features] if features is not None else [])
        # The bare input tensor, not a one-element list: Keras warns when the call's structure differs.
        self.grad_model = keras.Model(model.inputs[0], outputs)
        self.score_is_prob = score_is_prob
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self._spec = (
            tf.TensorSpec((None, *self.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        )
        self._fns: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _compiled(self, method: str):
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
        with self._lock:
            fn = self._fns.get(method)
            if fn is None:
                import tensorflow as tf

                fn = tf.function(self._build_pass(method), input_signature=self._spec)
                self._fns[method] = fn
        return fn

    def _build_pass(self, method: str):
        import tensorflow as tf

        grad_model = self.grad_model
        score_is_prob = self.score_is_prob
        n_layers = len(self.layer_names)
        has_features = self.has_features

        def layer_map(features, grads):
            if method == "gradcam":
                weights = tf.reduce_mean(grads, axis=(1, 2))
            else:
                # Grad-CAM++ (Chattopadhay et al., 2018), closed form with the exponential
                # score: alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha * relu(g)).
                g2 = tf.square(grads)
                g3 = g2 * grads
                sum_a = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
                denom = 2.0 * g2 + sum_a * g3
                alpha = tf.math.divide_no_nan(g2, denom)
                weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
            cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights))
            return tf.where(tf.math.is_finite(cam), cam, tf.zeros_like(cam))

        def cam_pass(x, class_index):
            with tf.GradientTape() as tape:
                out = grad_model(x, training=False)
                pooled = out[-1] if has_features else tf.zeros((tf.shape(x)[0], 0))
                features, score, probs = out[:n_layers], out[n_layers], out[n_layers + 1]
                predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
                chosen = tf.where(class_index < 0, predicted, class_index)
                if score_is_prob:
                    score = tf.math.log(score + 1e-12)
                # Each image's score depends only on its own input, so one gradient of the
                # sum gives every image its own gradient.
                total = tf.reduce_sum(tf.gather(score, chosen, axis=1, batch_dims=1))
            # Every target layer's gradient from the one tape: one backward pass for all.
            grads = tape.gradient(total, features)
            cams = tuple(layer_map(features[i], grads[i]) for i in range(n_layers))
            return probs, chosen, cams, pooled

        return cam_pass

    def raw(
        self,
        x: np.ndarray,
        class_index: int | np.ndarray | None = None,
        method: str = "gradcam",
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray | None]:
        """Probabilities ``(N, K)``, explained classes ``(N,)``, per target layer the map ``(N, h, w)``
        on its feature grid before any normalisation (non-negative, finite), and the penultimate
        features ``(N, D)`` of the same forward pass (None when the network has none).

        ``x`` is a batch of model inputs ``(N, S, S, C)``. ``class_index`` None explains each
        image's predicted class; an int or an array of N ints chooses the classes.
        """
        fn = self._compiled(method)
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if class_index is None:
            cls = np.full((n,), -1, dtype=np.int32)
        else:
            cls = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()
            if np.any((cls < 0) | (cls >= self.n_classes)):
                raise ValueError(f"class index out of range 0..{self.n_classes - 1}: {class_index}")
        probs, chosen, cams, pooled = fn(x, cls)
        maps = [np.maximum(np.nan_to_num(c.numpy(), nan=0.0, posinf=0.0, neginf=0.0), 0.0) for c in cams]
        features = np.asarray(pooled, dtype=np.float32) if self.has_features else None
        return probs.numpy(), chosen.numpy(), maps, features

    def run(
        self,
        x: np.ndarray,
        class_index: int | np.ndarray | None = None,
        method: str = "gradcam",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities ``(N, K)``, explained classes ``(N,)`` and maps ``(N, h, w)`` in [0, 1].

        One target layer: the maps lie on its feature grid. Several: on the input grid ``(S, S)``,
        the mean of the layers' maps (:func:`combine_maps`). See :meth:`raw` for the arguments.
        """
        return self.run_with_features(x, class_index, method)[:3]

    def run_with_features(
        self,
        x: np.ndarray,
        class_index: int | np.ndarray | None = None,
        method: str = "gradcam",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`run` plus the penultimate features ``(N, D)`` of the same forward pass (the
        input of the final Dense layer, as :func:`inference.ood.with_features`; None without one)."""
        probs, chosen, maps, features = self.raw(x, class_index, method)
        if len(maps) == 1:
            cams = normalise_maps(maps[0])
        else:
            cams = normalise_maps(combine_maps(maps, (self.input_shape[1], self.input_shape[0])))
        return probs, chosen, cams, features


def combine_maps(maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The mean of several layers' raw maps (each ``(N, h_i, w_i)``, from :meth:`CamEngine.raw`)
    over a ``size`` = (width, height) grid, ``(N, height, width)``, not yet normalised.

    Why the mean of the raw maps and not of maps normalised one by one: in an ensemble's
    additive head each member's gradient already carries its weight in the averaged score
    (1 / (n T_i)), so the raw maps are on one scale, the score's. Normalising each first would
    give a member whose evidence for the class is faint (or pure noise) the same full-scale heat
    as the member that decides the prediction. Each map is first multiplied by its number of
    cells (h_i w_i): on a pooled linear head a Grad-CAM map sums to the layer's share of the
    score over its cells, so a 14x14 grid's cells are four times fainter than a 7x7 grid's for
    the same evidence; scaled, every map's mean over the image is its share, whatever its grid.
    The one normalisation to [0, 1] (:func:`normalise_maps`) comes after the mean.
    """
    width, height = size
    if not maps:
        raise ValueError("no Grad-CAM maps to combine")
    n = int(maps[0].shape[0])
    total = np.zeros((n, height, width), np.float32)
    for layer_maps in maps:
        cells = float(layer_maps.shape[1] * layer_maps.shape[2])
        for i in range(n):
            total[i] += _resize(layer_maps[i] * cells, size)
    return total / float(len(maps))


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each map ``(N, h, w)`` divided by its peak, in [0, 1]; a map whose peak is below
    :data:`_EPS` (vanished gradients) becomes all zeros, never NaN."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.size == 0:
        return maps
    peak = maps.max(axis=(1, 2), keepdims=True)
    out = np.where(peak > _EPS, maps / np.maximum(peak, _EPS), 0.0).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


# One engine per (model, layer): building the gradient model and tracing the pass costs
# far more than running it. Weak keys let a replaced model and its engines be collected.
_ENGINES: weakref.WeakKeyDictionary[Any, dict[str, CamEngine]] = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def cam_engine(model: keras.Model, layer_name: str | Sequence[str]) -> CamEngine:
    """The cached :class:`CamEngine` for ``model`` and ``layer_name`` (one name or several)."""
    key = layer_name if isinstance(layer_name, str) else "\n".join(layer_name)
    with _ENGINES_LOCK:
        per_model = _ENGINES.setdefault(model, {})
        engine = per_model.get(key)
        if engine is None:
            engine = CamEngine(model, layer_name)
            per_model[key] = engine
    return engine


def gradcam(
    model: keras.Model,
    x: np.ndarray,
    layer_name: str | Sequence[str],
    class_index: int | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """The Grad-CAM map of one model input ``(S, S, C)`` (or a batch) over the input grid.

    Returns float32 in [0, 1] of shape ``(S, S)`` (``(N, S, S)`` for a batch), explaining
    ``class_index`` or, when None, the predicted class.
    """
    x = np.asarray(x, dtype=np.float32)
    single = x.ndim == 3
    batch = x[np.newaxis] if single else x
    _, _, cams = cam_engine(model, layer_name).run(batch, class_index, method)
    size = (int(batch.shape[2]), int(batch.shape[1]))
    maps = np.stack([upsample(c, size) for c in cams]) if len(cams) else np.zeros((0, size[1], size[0]), np.float32)
    return maps[0] if single else maps


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A feature-grid map resized to ``size`` = (width, height), bilinear, kept in [0, 1]."""
    out = _resize(cam, size)
    return np.clip(out, 0.0, 1.0, out=out)


def _resize(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size`` = (width, height), values kept (raw maps are not in [0, 1])."""
    cam = np.asarray(cam, dtype=np.float32)
    if (cam.shape[1], cam.shape[0]) == tuple(size):
        return cam.copy()
    return cv2.resize(cam, size, interpolation=cv2.INTER_LINEAR)
