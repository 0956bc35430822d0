"""Grad-CAM: the heat map lies on the original image where the evidence is; never NaN; every architecture."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.loading import load_image  # noqa: E402
from inference.preprocess import HEAT_TAPER, PreprocessConfig, preprocess  # noqa: E402
from tests.tiny_bundle import build_tiny_model, corner_square_image, make_tiny_bundle, xray_from_array  # noqa: E402

METHODS = ("gradcam", "gradcam++")
ORIGINAL = (96, 128)  # (height, width): not square, so a transposed or squashed map would show


@pytest.fixture(scope="module")
def square_predictor(tmp_path_factory):
    """A tiny CNN trained until the bright square is all it knows (about 3 s on two cores)."""
    from inference.predictor import Predictor

    rng = np.random.default_rng(0)
    config = PreprocessConfig(size=32)
    xs, ys = [], []
    for i in range(96):
        label = i % 2
        shape = (int(rng.integers(80, 140)), int(rng.integers(80, 140)))
        img = corner_square_image("tl" if label == 0 else None, shape, rng)
        xs.append(preprocess(xray_from_array(img), config)[0])
        ys.append(label)
    bundle = make_tiny_bundle(
        tmp_path_factory.mktemp("square") / "bundle",
        classes=("square", "none"),
        train_on=(np.stack(xs), np.array(ys)),
    )
    return Predictor(bundle)


def _square_box(img: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(img == 230)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("corner", ["tl", "br"])
def test_heat_peaks_on_the_square_of_the_original_image(square_predictor, tmp_path: Path, corner, method):
    # Trained on top-left squares only; a convolutional model finds the square wherever it is,
    # so the bottom-right case checks the mapping in the other direction too.
    img = corner_square_image(corner, ORIGINAL, np.random.default_rng(7))
    path = tmp_path / "test.png"
    cv2.imwrite(str(path), img)
    image = load_image(path)  # the real loader, then the real preprocessing inside the predictor

    pred, expl = square_predictor.predict_and_explain(image, class_index=0, method=method)
    assert pred.probabilities["square"] > 0.7, "the tiny model did not learn the square"
    heat = expl.heatmap_original
    assert heat.shape == ORIGINAL and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0, abs=0.05)

    x0, y0, x1, y1 = _square_box(img)
    px, py = expl.peak()
    # Peak within the square, give or take one cell of the 16x16 feature grid (8x6 px here).
    assert x0 - 8 <= px < x1 + 8 and y0 - 6 <= py < y1 + 6, (corner, (px, py), (x0, y0, x1, y1))
    in_corner = (px < ORIGINAL[1] / 2, py < ORIGINAL[0] / 2)
    assert in_corner == ((True, True) if corner == "tl" else (False, False))
    inside = np.zeros(ORIGINAL, bool)
    inside[y0:y1, x0:x1] = True
    assert heat[inside].mean() > 3 * heat[~inside].mean()


@pytest.mark.parametrize("method", METHODS)
def test_constant_image_gives_finite_map_in_range(square_predictor, method):
    for value in (0, 100, 255):
        image = xray_from_array(np.full(ORIGINAL, value, np.uint8))
        _, expl = square_predictor.predict_and_explain(image, method=method)
        for heat in (expl.heatmap_original, expl.heatmap_model, expl.cam):
            assert np.isfinite(heat).all()
            assert heat.min() >= 0.0 and heat.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_vanishing_gradients_give_an_all_zero_map(method):
    from inference.gradcam import gradcam

    model = build_tiny_model(32, 1, 3)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), bias])  # the score no longer depends on the image
    x = np.random.default_rng(0).random((32, 32, 1), dtype=np.float32)
    heat = gradcam(model, x, "last_conv", method=method)
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert not heat.any()


def test_gradcam_function_shapes_classes_and_errors():
    from inference.gradcam import cam_engine, gradcam

    model = build_tiny_model(32, 1, 3)
    x = np.random.default_rng(1).random((4, 32, 32, 1), dtype=np.float32)
    maps = gradcam(model, x, "last_conv")
    assert maps.shape == (4, 32, 32) and maps.dtype == np.float32
    assert ((maps >= 0) & (maps <= 1)).all()
    np.testing.assert_allclose(gradcam(model, x[1], "last_conv"), maps[1], atol=1e-5)
    # Explaining another class gives another map.
    probs, chosen, _ = cam_engine(model, "last_conv").run(x[:1])
    other = (int(chosen[0]) + 1) % 3
    assert not np.allclose(gradcam(model, x[0], "last_conv", class_index=other), maps[0])
    assert cam_engine(model, "last_conv") is cam_engine(model, "last_conv")  # built once
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, x[0], "last_conv", class_index=3)
    with pytest.raises(ValueError, match="method"):
        gradcam(model, x[0], "last_conv", method="saliency")
    with pytest.raises(ValueError, match="spatial"):
        gradcam(model, x[0], "logits")


def test_models_without_a_logits_layer():
    """Fallbacks: the input of a final softmax Activation, else the log of a softmax Dense's output."""
    import keras
    from keras import layers

    from inference.gradcam import cam_engine

    inputs = keras.Input((32, 32, 1))
    feats = layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inputs)
    pooled = layers.GlobalAveragePooling2D()(feats)
    scores = layers.Dense(3, name="scores")(pooled)
    with_activation = keras.Model(inputs, layers.Activation("softmax")(scores))
    dense_softmax = keras.Model(inputs, layers.Dense(3, activation="softmax")(pooled))
    x = np.random.default_rng(2).random((2, 32, 32, 1), dtype=np.float32)
    for model, uses_log in ((with_activation, False), (dense_softmax, True)):
        engine = cam_engine(model, "feat")
        assert engine.score_is_prob is uses_log
        probs, _, cams = engine.run(x)
        np.testing.assert_allclose(probs, model(x).numpy(), atol=1e-6)
        assert np.isfinite(cams).all() and cams.max() <= 1.0


def _architectures():
    try:
        from training.architectures import ARCHITECTURES
    except ImportError:  # pragma: no cover - the training package is part of the repository
        return []
    return list(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("arch", _architectures())
def test_gradcam_works_for_every_architecture(arch):
    import keras
    import tensorflow as tf

    from inference.gradcam import cam_engine, upsample
    from training.architectures import MIN_INPUT_SIZE, build_model

    size = max(32, MIN_INPUT_SIZE[arch])
    keras.utils.set_random_seed(0)
    model, layer = build_model(arch, size, 1, 3)
    x = np.random.default_rng(0).random((1, size, size, 1), dtype=np.float32)
    for method in METHODS:
        # Eagerly: the same code, without tracing a big graph twice (the slow part, and not under test here).
        tf.config.run_functions_eagerly(True)
        try:
            probs, chosen, cams = cam_engine(model, layer).run(x, method=method)
        finally:
            tf.config.run_functions_eagerly(False)
        assert probs.shape == (1, 3) and np.isfinite(probs).all()
        assert cams.ndim == 3 and cams.shape[0] == 1
        heat = upsample(cams[0], (size, size))
        assert heat.shape == (size, size)
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0


class FixedLungs:
    """A stand-in lung model: the same lung box (and a mask filling it) for every image."""

    def __init__(self, box: tuple[int, int, int, int]):
        self.box = box

    def segment(self, image, margin=None):
        from inference.lungs import LungResult

        h, w = image.pixels.shape[:2]
        mask = np.zeros((h, w), bool)
        x0, y0, x1, y1 = self.box
        mask[y0:y1, x0:x1] = True
        return LungResult(mask, None, float(mask.mean()), True, None, self.box, margin or 0.0)


def test_heat_map_of_a_cropped_input_lands_on_the_original(square_predictor, tmp_path: Path):
    """With a crop box (issue 7's lung crop), the map is placed inside the box and fades to zero
    just outside it (no hard rectangle in the exports)."""
    import json
    import shutil

    from inference.predictor import Predictor

    bundle = tmp_path / "cropping"
    shutil.copytree(square_predictor.bundle_dir, bundle)
    info = json.loads((bundle / "model.json").read_text())
    info["preprocessing"]["crop"] = "lungs"
    (bundle / "model.json").write_text(json.dumps(info))
    box = (30, 20, 128, 96)  # x0, y0, x1, y1: the right part, holding the bottom-right square
    predictor = Predictor(bundle, lungs=FixedLungs(box))

    img = corner_square_image("br", ORIGINAL, np.random.default_rng(11))
    pred, expl = predictor.predict_and_explain(xray_from_array(img), class_index=0)
    assert pred.geometry.crop_box == box
    heat = expl.heatmap_original
    assert heat.shape == ORIGINAL
    taper = round(HEAT_TAPER * max(128 - 30, 96 - 20))
    assert not heat[:, : 30 - taper].any() and not heat[: 20 - taper].any()
    exact = expl.geometry.to_original(expl.cam)  # the untapered map: the same inside the box
    np.testing.assert_array_equal(heat[20:96, 30:128], np.clip(exact, 0.0, 1.0)[20:96, 30:128])
    x0, y0, x1, y1 = _square_box(img)
    px, py = expl.peak()
    assert x0 - 8 <= px < x1 + 8 and y0 - 6 <= py < y1 + 6, ((px, py), (x0, y0, x1, y1))
    # All the heat lies in the crop, and the crop is the "lung" mask here.
    assert expl.lung_heat_fraction == pytest.approx(1.0)
    assert expl.lung_warning is None


def test_engine_cache_lets_a_replaced_model_go():
    """Switching models in the viewer must free the old one: the cache holds models weakly."""
    import gc
    import weakref

    from inference import gradcam as gradcam_module

    model = build_tiny_model(32, 1, 3)
    ref = weakref.ref(model)
    gradcam_module.gradcam(model, np.zeros((32, 32, 1), np.float32), "last_conv")
    assert model in gradcam_module._ENGINES
    del model
    gc.collect()
    assert ref() is None
