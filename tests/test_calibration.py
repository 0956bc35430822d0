"""Temperature scaling: fitting lowers the NLL without changing a prediction, bundles carry the
temperature (old bundles load without it), and every predicted score uses it."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.bundle import BundleError, BundleInfo, read_bundle_info  # noqa: E402
from inference.calibration import apply_temperature, softmax, temperature_of  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle, xray_from_array  # noqa: E402
from tests.training_data import class_image, make_class_folder  # noqa: E402
from training.calibration import CalibrationError, calibrate_bundle, calibration_record, fit_temperature, nll  # noqa: E402


def _miscalibrated(scale: float, n: int = 3000, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (a perfectly calibrated model), logits reported as scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, k))
    p = softmax(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return scale * z, labels


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_fitted_temperature_undoes_the_miscalibration_and_keeps_every_prediction(scale: float) -> None:
    logits, labels = _miscalibrated(scale)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(scale, rel=0.1)  # over-confident -> T > 1, timid -> T < 1
    assert nll(logits, labels, t) < nll(logits, labels, 1.0) - 0.05
    probs = softmax(logits)
    calibrated = apply_temperature(probs.astype(np.float32), t)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=1e-5)


def test_calibration_record_reports_a_lower_ece() -> None:
    logits, labels = _miscalibrated(3.0, n=2000, seed=1)
    record = calibration_record(logits, labels, "synthetic")
    assert record["temperature"] > 2.5 and record["fitted_on"] == "synthetic"
    assert record["nll_after"] < record["nll_before"]
    assert record["ece_after"] < record["ece_before"] / 2
    with pytest.raises(CalibrationError, match="at least 100"):
        calibration_record(logits[:50], labels[:50], "too few")
    # All correct: the NLL falls forever as T -> 0, so no temperature is claimed.
    right = logits.argmax(axis=1)
    assert fit_temperature(logits, right) == pytest.approx(0.05)  # the search bound: meaningless
    with pytest.raises(CalibrationError, match="all 2000 calibration images correctly"):
        calibration_record(logits, right, "easy")


def test_temperature_on_probabilities_equals_temperature_on_logits() -> None:
    z = np.array([[2.0, -1.0, 0.5], [10.0, 9.0, -30.0]])
    for t in (0.5, 1.0, 2.5):
        np.testing.assert_allclose(apply_temperature(softmax(z), t), softmax(z, t), rtol=1e-6, atol=1e-12)
    p = softmax(z).astype(np.float32)
    assert apply_temperature(p, 1.0) is p  # no calibration: untouched


def _info(**extra) -> BundleInfo:
    return BundleInfo(
        name="m",
        version="1",
        architecture="tiny",
        class_names=["A", "B"],
        preprocessing=PreprocessConfig(size=32, channels=1),
        gradcam_layer="last_conv",
        **extra,
    )


def test_bundle_info_without_calibration_reads_as_before() -> None:
    d = _info().to_dict()
    assert "calibration" not in d  # old readers see exactly the old model.json
    info = BundleInfo.from_dict(d)
    assert info.calibration is None and temperature_of(info.calibration) == 1.0
    cal = {"temperature": 1.7, "fitted_on": "val", "ece_before": 0.1, "ece_after": 0.02}
    again = BundleInfo.from_dict(_info(calibration=cal).to_dict())
    assert again.calibration == cal and temperature_of(again.calibration) == 1.7
    for bad in ({"temperature": -1}, {"temperature": "2"}, {"fitted_on": "val"}, {"temperature": float("inf")}):
        with pytest.raises(BundleError, match="invalid calibration"):
            BundleInfo.from_dict({**d, "calibration": bad})


def _set_temperature(bundle: Path, t: float) -> None:
    path = bundle / "model.json"
    data = json.loads(path.read_text())
    data["calibration"] = {"temperature": t, "fitted_on": "test"}
    path.write_text(json.dumps(data))


def test_predictor_applies_the_bundle_temperature(tmp_path: Path) -> None:
    from inference.predictor import Predictor

    x = np.stack([class_image(i % 3, seed=i, size=32) for i in range(24)]).astype(np.float32)[..., None] / 255
    y = np.arange(24) % 3
    bundle = make_tiny_bundle(tmp_path / "m", size=32, train_on=(x, y), epochs=15)
    image = xray_from_array(class_image(1, seed=99, size=32))
    plain = Predictor(bundle, lungs=None)
    assert plain.temperature == 1.0
    before = plain.predict(image)
    raw = plain.forward(plain.prepare(image)[0][None])[0]
    np.testing.assert_allclose(before.probs, raw, rtol=1e-6)  # old bundle: exactly the network's output

    _set_temperature(bundle, 3.0)
    calibrated = Predictor(bundle, lungs=None)
    after = calibrated.predict(image)
    np.testing.assert_allclose(after.probs, apply_temperature(raw, 3.0), rtol=1e-5)
    assert after.label == before.label and after.confidence < before.confidence
    # The explain path goes through the same place.
    explained, _ = calibrated.predict_and_explain(image)
    np.testing.assert_allclose(explained.probs, after.probs, rtol=1e-4)


def test_calibrate_bundle_writes_a_new_bundle_and_leaves_the_original(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "orig", classes=("A", "B", "C"), size=32)
    original = (bundle / "model.json").read_bytes()
    data = tmp_path / "data"
    make_class_folder(data, {"A": 40, "B": 40, "C": 40}, size=32)
    out, record = calibrate_bundle(bundle, data, tmp_path / "calibrated")
    info = read_bundle_info(out)
    assert info.calibration == record and record["n_images"] == 120 and record["temperature"] > 0
    assert (bundle / "model.json").read_bytes() == original
    with pytest.raises(CalibrationError, match="new folder"):
        calibrate_bundle(bundle, data, bundle)
    with pytest.raises(CalibrationError, match="already exists"):
        calibrate_bundle(bundle, data, out)
    with pytest.raises(CalibrationError, match="at least 100"):
        calibrate_bundle(bundle, data, tmp_path / "none", class_map={"A": "X", "B": "Y", "C": "Z"})


def test_training_fits_the_temperature_on_the_validation_split(tmp_path: Path) -> None:
    from training.train import TrainConfig, train

    data = tmp_path / "data"
    paths = make_class_folder(data, {"A": 80, "B": 80}, size=32)
    for p in paths[::6]:  # label noise, so the model must err on validation images
        other = "B" if p.parent.name == "A" else "A"
        p.rename(data / other / f"swapped_{p.name}")
    result = train(
        TrainConfig(
            data=data,
            out_dir=tmp_path / "m",
            init="scratch",
            arch="custom-cnn",
            image_size=32,
            epochs=2,
            val_fraction=0.7,
            augment=False,
        )
    )
    cal = result.info.calibration
    assert cal is not None and cal["n_images"] >= 100 and cal["fitted_on"].startswith("validation split")
    assert cal["nll_after"] <= cal["nll_before"]
    # The reported validation metrics are those of the calibrated scores (what the app shows).
    assert result.metrics["val"]["ece"] == pytest.approx(cal["ece_after"], abs=1e-3)
    assert read_bundle_info(result.bundle_dir).calibration == cal
