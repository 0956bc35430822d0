"""Every architecture builds as one flat graph that Grad-CAM can use, and survives the bundle."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from inference.bundle import BundleInfo, load_bundle, write_bundle  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from training.architectures import (  # noqa: E402
    ARCHITECTURES,
    GRADCAM_LAYERS,
    MIN_INPUT_SIZE,
    build_model,
    count_params,
)


def _input(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architecture_is_flat_gradcam_ready_and_round_trips(arch: str, tmp_path: Path) -> None:
    size = max(32, MIN_INPUT_SIZE[arch])
    model, layer = build_model(arch, size, channels=1, n_classes=3)
    assert layer == GRADCAM_LAYERS[arch]
    assert model.inputs[0].shape[1:] == (size, size, 1)
    # Flat: no layer is itself a model, so inner layers are reachable from the top-level input.
    assert not any(isinstance(lyr, keras.Model) for lyr in model.layers)
    assert not any(type(lyr).__name__ == "Lambda" for lyr in model.layers)  # safe_mode loading needs this

    x = _input(size)
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        conv, logits = grad_model(x)
        score = logits[:, 1]
    grads = tape.gradient(score, conv)
    assert conv.shape.rank == 4 and grads is not None
    assert np.isfinite(grads.numpy()).all() and np.abs(grads.numpy()).sum() > 0

    probs = model(x, training=False).numpy()  # eager: tracing predict() costs more than it tests
    np.testing.assert_allclose(probs, tf.nn.softmax(logits).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    info = BundleInfo(
        name=f"t-{arch}",
        version="0",
        architecture=arch,
        class_names=["A", "B", "C"],
        preprocessing=PreprocessConfig(size=size, channels=1),
        gradcam_layer=layer,
    )
    out = write_bundle(model, info, tmp_path / arch)
    loaded, loaded_info = load_bundle(out)  # safe_mode=True inside
    assert loaded_info.architecture == arch
    np.testing.assert_allclose(loaded(x, training=False).numpy(), probs, rtol=1e-4, atol=1e-5)


def test_custom_cnn_is_small_and_has_a_fine_gradcam_map() -> None:
    model, layer = build_model("custom-cnn", 224, 1, 3)
    assert count_params(model) * 4 < 5_000_000  # float32 bytes: under 5 MB
    assert model.get_layer(layer).output.shape[1:3] == (14, 14)


def test_imagenet_bases_take_gray_or_rgb_and_scale_inside() -> None:
    gray, _ = build_model("resnet50", 32, 1, 2)
    rgb, _ = build_model("resnet50", 32, 3, 2)
    assert gray.inputs[0].shape[-1] == 1 and rgb.inputs[0].shape[-1] == 3
    # A white image reaches the first convolution as 255 minus the ImageNet mean (caffe scaling).
    probe = keras.Model(gray.inputs, gray.get_layer("imagenet_norm").output)
    out = probe(np.ones((1, 32, 32, 1), np.float32)).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_model("alexnet", 64, 1, 3)
    with pytest.raises(ValueError, match="at least 71"):
        build_model("xception", 64, 1, 3)
    with pytest.raises(ValueError, match="two classes"):
        build_model("custom-cnn", 64, 1, 1)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_model("custom-cnn", 64, 1, 3, weights=tmp_path / "w.h5")
    with pytest.raises(ValueError, match="not found"):
        build_model("mobilenetv2", 32, 1, 3, weights=tmp_path / "missing.h5")


def test_local_weights_file_loads_into_the_flat_base(tmp_path: Path) -> None:
    """A 'no top' weights file (here made from a stand-alone base) lands in the flat model."""
    keras.utils.set_random_seed(1)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    reference.save_weights(path)
    model, _ = build_model("mobilenetv2", 32, 1, 3, weights=path)
    reference_layers = [lyr for lyr in reference.layers if lyr.weights]
    assert len(reference_layers) > 50
    for lyr in reference_layers:
        for a, b in zip(lyr.get_weights(), model.get_layer(lyr.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not hold"):
        build_model("resnet50", 32, 1, 3, weights=path)
