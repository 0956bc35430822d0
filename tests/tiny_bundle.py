"""Tiny model bundles and synthetic images for tests (no shared data, a second or two each).

The network follows the conventions of ``training.architectures``: one flat functional
graph, a 4-D layer named ``last_conv`` for Grad-CAM, a Dense named ``logits`` and a softmax
``Activation`` named ``predictions``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.image import ImageMeta, XRayImage  # noqa: E402

DEFAULT_CLASSES = ("COVID-19", "Normal", "Pneumonia")


def build_tiny_model(size: int = 32, channels: int = 1, n_classes: int = 3, head: str = "gap"):
    """A small CNN; ``head="flatten"`` keeps where things are, which position-only tasks need."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, channels), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x) if head == "gap" else layers.Flatten(name="flatten")(x)
    logits = layers.Dense(n_classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="predictions")(logits)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def make_tiny_bundle(
    out_dir: str | os.PathLike[str],
    classes: Sequence[str] = DEFAULT_CLASSES,
    size: int = 32,
    channels: int = 1,
    train_on: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int = 25,
    learning_rate: float = 1e-2,
    head: str = "gap",
    seed: int = 0,
    name: str = "tiny-test",
    version: str = "0.0.1",
) -> Path:
    """Build (and with ``train_on=(x, y)`` train) a tiny classifier and write it as a bundle.

    ``x`` is float32 ``(N, size, size, channels)`` in [0, 1] (the output of
    ``inference.preprocess.preprocess``), ``y`` integer class indices ``(N,)``.
    Returns the bundle folder.
    """
    import keras

    from inference.bundle import BundleInfo, write_bundle
    from inference.preprocess import PreprocessConfig

    keras.utils.set_random_seed(seed)
    model = build_tiny_model(size, channels, len(classes), head)
    if train_on is not None:
        x, y = train_on
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
        model.fit(np.asarray(x, np.float32), np.asarray(y), epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    info = BundleInfo(
        name=name,
        version=version,
        architecture=f"tiny-cnn-{head}",
        class_names=list(classes),
        preprocessing=PreprocessConfig(size=size, channels=channels),
        gradcam_layer="last_conv",
        description="Tiny test model; meaningless predictions.",
    )
    return write_bundle(model, info, out_dir)


def xray_from_array(
    pixels: np.ndarray,
    path: str = "synthetic.png",
    fmt: str = "PNG",
    bits_stored: int = 8,
    **meta: object,
) -> XRayImage:
    """An :class:`XRayImage` around ``pixels`` as if a PNG (or ``fmt``) had been loaded."""
    pixels = np.asarray(pixels)
    m = ImageMeta(
        path=path,
        format=fmt,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        bits_stored=bits_stored,
        **meta,  # type: ignore[arg-type]
    )
    return XRayImage(pixels=pixels, meta=m)


def corner_square_image(
    corner: str | None,
    shape: tuple[int, int] = (96, 128),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """uint8 noise whose only signal is a bright square in ``corner`` ("tl", "br" or None).

    The square's side is a quarter of the shorter side and jitters a little, so a model
    has to find it rather than memorise one pixel.
    """
    rng = rng or np.random.default_rng(0)
    h, w = shape
    img = rng.normal(90, 20, size=shape).clip(0, 255)
    side = min(h, w) // 4
    jy, jx = (int(v) for v in rng.integers(0, max(2, side // 3), size=2))
    if corner == "tl":
        img[h // 16 + jy : h // 16 + jy + side, w // 16 + jx : w // 16 + jx + side] = 230
    elif corner == "br":
        y1, x1 = h - h // 16 - jy, w - w // 16 - jx
        img[y1 - side : y1, x1 - side : x1] = 230
    return img.astype(np.uint8)


def edited_bundle(source: str | os.PathLike[str], dest: str | os.PathLike[str], edit=None) -> Path:
    """A copy of the bundle ``source`` at ``dest`` whose ``model.json`` went through ``edit``.

    ``edit(data)`` changes the parsed description in place (or returns a replacement, which
    may be any JSON value, or ``bytes``/``str`` written as they are): hostile and broken model
    folders for the tests are built this way from a real tiny bundle.
    """
    import json
    import shutil

    dest = Path(dest)
    shutil.copytree(source, dest)
    if edit is not None:
        data = json.loads((dest / "model.json").read_text(encoding="utf-8"))
        new = edit(data)
        if new is None:
            new = data
        if isinstance(new, bytes):
            (dest / "model.json").write_bytes(new)
        elif isinstance(new, str):
            (dest / "model.json").write_text(new, encoding="utf-8")
        else:
            (dest / "model.json").write_text(json.dumps(new), encoding="utf-8")
    return dest
