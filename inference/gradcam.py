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
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["METHODS", "CamEngine", "cam_engine", "gradcam", "upsample"]

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
    """A compiled Grad-CAM pass for one model and one target layer.

    Build it once (see :func:`cam_engine`); :meth:`run` then takes a batch and returns the
    probabilities, the class each map explains and the maps.
    """

    def __init__(self, model: keras.Model, layer_name: str):
        import keras
        import tensorflow as tf

        # No reference to ``model`` itself: the engine cache below is keyed weakly on it.
        self.n_classes = int(model.outputs[0].shape[-1])
        self.layer_name = layer_name
        target = model.get_layer(layer_name)  # ValueError names the missing layer
        if len(target.output.shape) != 4:
            raise ValueError(f"Grad-CAM needs a layer with a spatial output; {layer_name!r} has {target.output.shape}")
        score, score_is_prob = _score_tensor(model)
        if len(model.inputs) != 1:
            raise ValueError(f"Grad-CAM expects a model with one input; {model.name} has {len(model.inputs)}")
        # The bare input tensor, not a one-element list: Keras warns when the call's structure differs.
        self.grad_model = keras.Model(model.inputs[0], [target.output, score, model.outputs[0]])
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

        def cam_pass(x, class_index):
            with tf.GradientTape() as tape:
                features, score, probs = grad_model(x, training=False)
                predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)
                chosen = tf.where(class_index < 0, predicted, class_index)
                if score_is_prob:
                    score = tf.math.log(score + 1e-12)
                # Each image's score depends only on its own input, so one gradient of the
                # sum gives every image its own gradient.
                total = tf.reduce_sum(tf.gather(score, chosen, axis=1, batch_dims=1))
            grads = tape.gradient(total, features)
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
            cam = tf.where(tf.math.is_finite(cam), cam, tf.zeros_like(cam))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            cam = tf.where(peak > _EPS, cam / tf.maximum(peak, _EPS), tf.zeros_like(cam))
            return probs, chosen, cam

        return cam_pass

    def run(
        self,
        x: np.ndarray,
        class_index: int | np.ndarray | None = None,
        method: str = "gradcam",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities ``(N, K)``, explained classes ``(N,)`` and maps ``(N, h, w)`` in [0, 1].

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
        probs, chosen, cams = fn(x, cls)
        cams = np.clip(np.nan_to_num(cams.numpy(), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
        return probs.numpy(), chosen.numpy(), cams.astype(np.float32, copy=False)


# One engine per (model, layer): building the gradient model and tracing the pass costs
# far more than running it. Weak keys let a replaced model and its engines be collected.
_ENGINES: weakref.WeakKeyDictionary[Any, dict[str, CamEngine]] = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def cam_engine(model: keras.Model, layer_name: str) -> CamEngine:
    """The cached :class:`CamEngine` for ``model`` and ``layer_name``."""
    with _ENGINES_LOCK:
        per_model = _ENGINES.setdefault(model, {})
        engine = per_model.get(layer_name)
        if engine is None:
            engine = CamEngine(model, layer_name)
            per_model[layer_name] = engine
    return engine


def gradcam(
    model: keras.Model,
    x: np.ndarray,
    layer_name: str,
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
    out = cv2.resize(np.asarray(cam, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0, out=out)
