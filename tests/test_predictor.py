"""Predictor: probabilities, class order, batch = single, many files with bad ones among them, bundle errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.bundle import BundleError  # noqa: E402
from inference.loading import load_image  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle, xray_from_array  # noqa: E402

# Not alphabetical on purpose: the output order must follow the bundle, not a sort.
CLASSES = ("Pneumonia", "COVID-19", "Normal")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("predictor") / "bundle", classes=CLASSES, size=32)


@pytest.fixture(scope="module")
def predictor(bundle):
    from inference.predictor import Predictor

    return Predictor(bundle)


def _images(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    shapes = [(40, 40), (64, 48), (30, 90), (128, 100)]
    return [xray_from_array(rng.integers(0, 256, size=shapes[i % 4], dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """PNG, JPEG and DICOM files plus a corrupt file, in a known order."""
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(3)
    for i in range(5):
        cv2.imwrite(str(d / f"{i:02d}_img.png"), rng.integers(0, 256, size=(50 + i, 60), dtype=np.uint8))
    cv2.imwrite(str(d / "05_img.jpg"), rng.integers(0, 256, size=(70, 64), dtype=np.uint8))
    make_dicom(d / "06_img.dcm", rng.integers(0, 4096, size=(48, 40), dtype=np.uint16), bits_stored=12)
    (d / "07_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cv2.imwrite(str(d / "08_img.png"), rng.integers(0, 256, size=(33, 33), dtype=np.uint8))
    return d


def test_probabilities_follow_the_bundle_class_order_and_sum_to_one(predictor):
    pred = predictor.predict(_images(1)[0])
    assert list(pred.probabilities) == list(CLASSES)
    assert pred.probs.shape == (3,)
    assert pred.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert [pred.probabilities[c] for c in CLASSES] == pytest.approx(pred.probs.tolist())
    assert pred.class_index == int(np.argmax(pred.probs))
    assert pred.label == CLASSES[pred.class_index]
    assert pred.model_name == "tiny-test" and pred.model_version == "0.0.1"
    assert pred.device == predictor.device and pred.device.startswith(("CPU", "GPU"))
    assert pred.geometry.original_shape == (40, 40)


def test_batch_equals_single(predictor):
    images = _images(6, seed=1)
    batch = predictor.predict_batch(images)
    singles = [predictor.predict(im) for im in images]
    assert len(batch) == 6
    for b, s in zip(batch, singles):
        np.testing.assert_allclose(b.probs, s.probs, atol=1e-5)
        assert b.geometry == s.geometry
    # Different inputs give different outputs: the model is not ignoring its input.
    assert not np.allclose(batch[0].probs, batch[1].probs)
    assert predictor.predict_batch([]) == []


def test_predict_matches_keras_model_on_the_shared_preprocessing(predictor):
    from inference.preprocess import preprocess

    image = _images(3)[2]
    x, _ = preprocess(image, predictor.info.preprocessing)
    expected = predictor.model(x[np.newaxis], training=False).numpy()[0]
    np.testing.assert_allclose(predictor.predict(image).probs, expected, atol=1e-6)


def test_predict_paths_keeps_order_and_reports_the_bad_file(predictor, folder):
    paths = sorted(folder.iterdir())
    calls = []
    results = list(predictor.predict_paths(paths, batch_size=3, progress=lambda d, t: calls.append((d, t))))
    assert [r.file for r in results] == [str(p) for p in paths]
    bad = [r for r in results if not r.ok]
    assert [Path(r.file).name for r in bad] == ["07_broken.png"]
    assert "07_broken.png" in bad[0].error and bad[0].prediction is None
    assert calls == [(i + 1, len(paths)) for i in range(len(paths))]
    for r in results:
        if r.ok:
            expected = predictor.predict(load_image(r.file))
            np.testing.assert_allclose(r.prediction.probs, expected.probs, atol=1e-5)
            assert r.image is None and r.explanation is None


def test_predict_paths_with_explanations_and_images(predictor, folder):
    paths = sorted(folder.iterdir())[:3]
    results = list(predictor.predict_paths(paths, batch_size=2, explain=True, keep_images=True))
    assert all(r.ok for r in results)
    for r in results:
        assert r.image is not None
        e = r.explanation
        assert e.class_index == r.prediction.class_index
        assert e.heatmap_original.shape == r.image.shape
        assert e.heatmap_model.shape == (32, 32)


def test_predict_paths_missing_file_and_early_stop(predictor, folder, tmp_path):
    paths = [tmp_path / "nope.png", *sorted(folder.glob("*.png"))]
    gen = predictor.predict_paths(paths, batch_size=1)
    first = next(gen)
    assert not first.ok and first.error
    gen.close()  # must not hang or raise with decodes still queued


def test_three_channel_bundle(tmp_path):
    from inference.predictor import Predictor

    p = Predictor(make_tiny_bundle(tmp_path / "rgb", size=32, channels=3))
    pred, expl = p.predict_and_explain(_images(1)[0])
    assert pred.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert expl.heatmap_original.shape == (40, 40)


# ------------------------------------------------------------------------------ bundle errors


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_missing_folder_is_a_clear_bundle_error(tmp_path):
    from inference.predictor import Predictor

    with pytest.raises(BundleError, match="not found"):
        Predictor(tmp_path / "absent")


def test_corrupt_model_file(bundle, tmp_path):
    from inference.predictor import Predictor

    d = _copy(bundle, tmp_path)
    (d / "model.keras").write_bytes(b"not a zip file at all")
    with pytest.raises(BundleError, match="cannot be loaded"):
        Predictor(d)


def test_missing_class_list(bundle, tmp_path):
    from inference.predictor import Predictor

    d = _copy(bundle, tmp_path)
    info = json.loads((d / "model.json").read_text())
    del info["class_names"]
    (d / "model.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match="class list"):
        Predictor(d)


def test_other_keras_version_is_named_when_loading_fails(bundle, tmp_path):
    from inference.predictor import Predictor

    d = _copy(bundle, tmp_path)
    info = json.loads((d / "model.json").read_text())
    info["keras_version"] = "2.15.0"
    (d / "model.json").write_text(json.dumps(info))
    (d / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BundleError, match="Keras 2.15.0"):
        Predictor(d)


def test_gradcam_layer_without_spatial_output(bundle, tmp_path):
    from inference.predictor import Predictor

    d = _copy(bundle, tmp_path)
    info = json.loads((d / "model.json").read_text())
    info["gradcam_layer"] = "logits"
    (d / "model.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match="spatial"):
        Predictor(d)
