"""The shipped ImageNet EfficientNet-Lite0 backbone: the converted weights give the PyTorch
reference's features, the network is flat and Grad-CAM-ready, and ``--init imagenet`` uses it."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.bundle import BundleInfo, load_bundle, write_bundle  # noqa: E402
from inference.gradcam import CamEngine  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from training.architectures import build_model, shipped_imagenet_weights  # noqa: E402
from training.init import resolve_init  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ARCH = "efficientnet-lite0"
# Pooled features (1280) of the converter's fixed input, computed by the PyTorch reference
# network (efficientnet_lite_pytorch) on the original state dict: not by Keras.
REFERENCE = REPO / "tests" / "data" / "efficientnet_lite0_reference_features.npy"


def _converter():
    """tools/convert_efficientnet_lite.py, for its ``reference_input`` (it imports torch only in main)."""
    path = REPO / "tools" / "convert_efficientnet_lite.py"
    spec = importlib.util.spec_from_file_location("convert_efficientnet_lite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pooled(model: keras.Model, x: np.ndarray) -> np.ndarray:
    probe = keras.Model(model.inputs[0], model.get_layer("head_pool").output)
    return np.asarray(probe(x, training=False))


@pytest.fixture(scope="module")
def pretrained() -> keras.Model:
    weights = shipped_imagenet_weights(ARCH)
    assert weights is not None, "the converted weights must ship under resources/weights/"
    model, _ = build_model(ARCH, 224, channels=1, n_classes=3, weights=weights)
    return model


def test_shipped_weights_give_the_pytorch_reference_features(pretrained: keras.Model) -> None:
    reference = np.load(REFERENCE)
    assert reference.shape == (1280,) and reference.max() > 1.0  # real features, not zeros
    x = _converter().reference_input(224)[np.newaxis]
    features = _pooled(pretrained, x)[0]
    # float32 through 16 blocks, TF against torch kernels: the converter measured about 1e-5.
    np.testing.assert_allclose(features, reference, atol=2e-4, rtol=0)
    # The check can fail: the same network without the weights is far from the reference.
    scratch, _ = build_model(ARCH, 224, channels=1, n_classes=3)
    assert np.abs(_pooled(scratch, x)[0] - reference).max() > 0.1


def test_the_input_scaling_is_inside_the_graph(pretrained: keras.Model) -> None:
    # EfficientNet-Lite's TF convention, (RGB - 127) / 128, from the [0, 1] shared preprocessing.
    probe = keras.Model(pretrained.inputs[0], pretrained.get_layer("input_scaling").output)
    x = np.zeros((1, 224, 224, 1), np.float32)
    x[0, :, 112:] = 1.0  # black left half, white right half
    out = np.asarray(probe(x, training=False))
    assert out.shape == (1, 224, 224, 3)
    np.testing.assert_allclose(out[0, 0, 0], [-127.0 / 128.0] * 3, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, -1], [128.0 / 128.0] * 3, rtol=1e-6)
    assert not any(type(layer).__name__ == "Lambda" for layer in pretrained.layers)


def test_pretrained_bundle_loads_safely_and_explains(pretrained: keras.Model, tmp_path: Path) -> None:
    info = BundleInfo(
        name="t-lite0",
        version="0",
        architecture=ARCH,
        class_names=["A", "B", "C"],
        preprocessing=PreprocessConfig(size=224, channels=1),
        gradcam_layer="top_activation",
    )
    x = _converter().reference_input(224)[np.newaxis]
    loaded, _ = load_bundle(write_bundle(pretrained, info, tmp_path / "lite0"))  # safe_mode=True inside
    np.testing.assert_allclose(_pooled(loaded, x), _pooled(pretrained, x), atol=1e-5)
    probs, chosen, cams = CamEngine(loaded, "top_activation").run(x)
    assert probs.shape == (1, 3) and cams.shape == (1, 7, 7)
    assert np.isfinite(cams).all() and cams.max() == pytest.approx(1.0)


def test_init_imagenet_uses_the_shipped_weights(tmp_path: Path) -> None:
    plan = resolve_init("imagenet", None, None, None, bundled=tmp_path / "none")
    assert plan.kind == "imagenet" and plan.arch == ARCH and plan.weights == shipped_imagenet_weights(ARCH)
    with pytest.raises(ValueError, match="ships ImageNet weights for efficientnet-lite0 only"):
        resolve_init("imagenet", "resnet50", None, None, bundled=tmp_path / "none")
    # imagenet:FILE keeps working for any local file.
    own = tmp_path / "own.weights.h5"
    own.write_bytes(b"x")
    plan = resolve_init(f"imagenet:{own}", ARCH, 160, None, bundled=tmp_path / "none")
    assert plan.weights == own and plan.size == 160


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras' own notes on the wrong file
def test_a_wrong_weights_file_is_refused_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "not_lite0.weights.h5"
    small, _ = build_model("custom-cnn", 32, 1, 2)
    small.save_weights(str(bogus))
    with pytest.raises(ValueError, match="does not hold efficientnet-lite0 'no top' weights"):
        build_model(ARCH, 64, 1, 2, weights=bogus)


def test_freezing_keeps_batchnorm_and_early_blocks_frozen() -> None:
    from training.finetune import block_names, freeze_for_finetuning

    model, _ = build_model(ARCH, 32, channels=1, n_classes=3)
    blocks = block_names(model)
    assert len(blocks) == 16 and blocks[0] == "block1a" and blocks[-1] == "block7a"
    freeze_for_finetuning(model, 5)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert {"block6a_expand_conv", "block7a_project_conv", "top_conv", "logits"} <= trainable
    assert not {"stem_conv", "block5c_project_conv", "block1a_dwconv"} & trainable
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers if layer.trainable)
    freeze_for_finetuning(model, None)  # everything but BatchNorm
    assert model.get_layer("stem_conv").trainable and not model.get_layer("stem_bn").trainable
    with pytest.raises(ValueError, match="negative"):
        freeze_for_finetuning(model, -1)


def test_training_from_imagenet_warms_up_the_head_then_tunes_the_top(tmp_path: Path) -> None:
    from tests.training_data import make_class_folder
    from training.train import TrainConfig, train

    data = tmp_path / "data"
    make_class_folder(data, {"A": 12, "B": 12}, size=48)
    result = train(
        TrainConfig(
            data=data,
            out_dir=tmp_path / "m",
            init="imagenet",
            image_size=32,
            epochs=1,
            head_epochs=5,
            batch_size=8,
            val_fraction=0.5,
            augment=False,
        )
    )
    transfer = result.info.training["transfer"]
    assert result.info.architecture == ARCH
    assert transfer["warm_up"]["epochs_run"] >= 1 and transfer["unfreeze_blocks"] == 5
    # The bundle's backbone outside the tuned blocks is still ImageNet's.
    loaded, info = load_bundle(result.bundle_dir)
    reference, _ = build_model(ARCH, 32, channels=1, n_classes=2, weights=shipped_imagenet_weights(ARCH))
    for name in ("stem_conv", "block3a_expand_conv", "block5c_project_bn"):
        for a, b in zip(loaded.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # 12 validation images are too few to fit a temperature: the bundle stays uncalibrated.
    assert info.calibration is None
