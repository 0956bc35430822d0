"""The abstain gate (issue 13, section 1): every path by which the predictor says "No AI result".

Scope rules through the predictor (each DICOM tag, a flat image), the lung gate, the OOD gate
on the model's own features (a tiny bundle with a crafted ``ood.npz``), older bundles unchanged,
the OOD scorer fitted by ``calibrate`` and by ``train``, evaluate's coverage, the JSON/CSV fields.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.bundle import BundleError, BundleInfo, read_bundle_info
from inference.loading import load_image
from inference.lungs import NO_LUNGS_WARNING, LungResult
from inference.ood import OOD_FILE, FeatureGaussians, load_feature_gaussians
from inference.predictor import NO_AI_RESULT, Predictor
from tests.dicom_factory import make_dicom
from tests.tiny_bundle import make_tiny_bundle, xray_from_array
from tests.training_data import class_image, write_csv, write_image

CLASSES = ["COVID-19", "Normal", "Pneumonia"]


def _film(rows: int = 64) -> np.ndarray:
    """A 12-bit image with the spread of a real film (in scope by its pixels)."""
    y, x = np.mgrid[0:rows, 0:rows]
    return (200 + 3000 * (x + y) / (2 * rows)).astype(np.uint16)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("abstain") / "tiny", size=32)


@pytest.fixture(scope="module")
def predictor(bundle: Path) -> Predictor:
    return Predictor(bundle, lungs=None)


class _Lungs:
    """A stand-in lung model that finds (or does not find) plausible lungs in every image."""

    def __init__(self, plausible: bool):
        self.plausible = plausible
        self.calls = 0

    def _result(self, image) -> LungResult:
        h, w = image.pixels.shape[:2]
        mask = np.zeros((h, w), bool)
        if self.plausible:
            mask[h // 4 : 3 * h // 4, w // 8 : 7 * w // 8] = True
        warning = None if self.plausible else f"{NO_LUNGS_WARNING} (lung area 0% of the image)"
        return LungResult(mask, None, float(mask.mean()), self.plausible, warning, (0, 0, w, h), 0.0)

    def segment(self, image, margin=None) -> LungResult:
        self.calls += 1
        return self._result(image)

    def network_input(self, image):
        return image.pixels, None

    def segment_batch(self, images, margin=None, inputs=None) -> list[LungResult]:
        self.calls += len(images)
        return [self._result(im) for im in images]


# -- scope rules through the predictor ----------------------------------------------------------


def test_an_in_scope_film_gets_a_class(predictor: Predictor, tmp_path: Path) -> None:
    make_dicom(tmp_path / "ok.dcm", _film(), bits_stored=12, extra={"BodyPartExamined": "CHEST"})
    p = predictor.predict(load_image(tmp_path / "ok.dcm"))
    assert not p.abstained and p.abstain_reason is None and p.shown_label == p.label in CLASSES


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"extra": {"PatientSpeciesDescription": "Felis catus"}}, ["animal", "PatientSpeciesDescription"]),
        ({"extra": {"PatientBreedDescription": "Beagle"}}, ["animal", "PatientBreedDescription"]),
        ({"extra": {"ResponsiblePerson": "Owner^Anne"}}, ["animal", "ResponsiblePerson"]),
        ({"view_position": "LL"}, ["Lateral view", "LL"]),
        ({"view_position": "RL"}, ["Lateral view", "RL"]),
        ({"extra": {"BodyPartExamined": "KNEE"}}, ["Body Part Examined is KNEE"]),
        ({"modality": "CT"}, ["Modality CT"]),
        ({"modality": "MR"}, ["Modality MR"]),
    ],
    ids=["species", "breed", "owner", "lateral-LL", "lateral-RL", "body-part", "modality-CT", "modality-MR"],
)
def test_each_dicom_tag_rule_makes_the_predictor_abstain(
    predictor: Predictor, tmp_path: Path, kwargs: dict, words: list[str]
) -> None:
    path = tmp_path / "out.dcm"
    make_dicom(path, _film(), bits_stored=12, **kwargs)
    single = predictor.predict(load_image(path))
    [batch] = list(predictor.predict_paths([path]))  # the batch path (predict command, viewer) too
    for p in (single, batch.prediction):
        assert p.abstained and p.shown_label == NO_AI_RESULT
        assert all(w in p.abstain_reason for w in words), p.abstain_reason
        assert p.label in CLASSES and np.isclose(p.probs.sum(), 1.0)  # kept for the record


def test_several_reasons_are_joined(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "cat-lateral.dcm"
    make_dicom(path, _film(), bits_stored=12, view_position="LL", extra={"PatientSpeciesDescription": "Felis catus"})
    reason = predictor.predict(load_image(path)).abstain_reason
    assert "animal" in reason and "Lateral view" in reason and reason.count(".") >= 2
    assert predictor.predict(load_image(path)).abstain_gates == ("scope",)


def _nearly_flat(size: int = 64) -> np.ndarray:
    """A flat field with one grey level of noise (a blank page, not a film)."""
    rng = np.random.default_rng(0)
    return (np.full((size, size), 120) + rng.integers(0, 2, (size, size))).astype(np.uint8)


def test_a_flat_image_makes_the_predictor_abstain(predictor: Predictor, tmp_path: Path) -> None:
    flat = _nearly_flat()
    p = predictor.predict(xray_from_array(flat))
    assert p.abstained and "nearly uniform" in p.abstain_reason
    path = write_image(tmp_path / "flat.png", flat)
    [r] = list(predictor.predict_paths([path]))
    assert r.ok and r.prediction.abstained and "nearly uniform" in r.prediction.abstain_reason


# -- the lung gate ------------------------------------------------------------------------------


def test_no_plausible_lungs_makes_the_predictor_abstain(bundle: Path, tmp_path: Path) -> None:
    lungs = _Lungs(plausible=False)
    gated = Predictor(bundle, lungs=lungs)  # a whole-image model: the lungs still gate it
    image = xray_from_array(class_image(0, seed=1, size=48))
    p = gated.predict(image)
    assert p.abstained and p.abstain_reason.startswith(NO_LUNGS_WARNING) and p.lung_warning
    assert p.abstain_gates == ("lungs",)
    path = write_image(tmp_path / "a.png", class_image(1, seed=2, size=48))
    [r] = list(gated.predict_paths([path]))
    assert r.prediction.abstained and NO_LUNGS_WARNING in r.prediction.abstain_reason
    explained, _ = gated.predict_and_explain(image)
    assert explained.abstained
    assert lungs.calls == 3  # every prediction ran the lung model, batched or not


def test_plausible_lungs_let_the_prediction_through(bundle: Path) -> None:
    p = Predictor(bundle, lungs=_Lungs(plausible=True)).predict(xray_from_array(class_image(0, seed=1, size=48)))
    assert not p.abstained and p.lung_warning is None


# -- the OOD gate ------------------------------------------------------------------------------


def _features(predictor: Predictor, image) -> np.ndarray:
    from inference.ood import with_features

    x, _ = predictor.prepare(image)
    return np.asarray(with_features(predictor.model)(x[np.newaxis])[1])[0]


@pytest.fixture(scope="module")
def ood_bundle(bundle: Path, predictor: Predictor, tmp_path_factory: pytest.TempPathFactory):
    """The tiny bundle plus an ood.npz centred on an in-scope image, with a threshold that
    puts a crafted input (a hard black/white checkerboard) outside."""
    folder = tmp_path_factory.mktemp("ood") / "tiny-ood"
    shutil.copytree(bundle, folder)
    inside = xray_from_array(class_image(0, seed=3, size=48))
    board = (np.indices((48, 48)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    crafted = xray_from_array(board)
    f_in, f_out = _features(predictor, inside), _features(predictor, crafted)
    gap = float(np.linalg.norm(f_out - f_in))
    assert gap > 0
    scorer = FeatureGaussians(np.stack([f_in] * 3), np.eye(len(f_in)), gap / 2, 0.99)
    scorer.save(folder)
    return folder, inside, crafted, gap


def test_an_input_beyond_the_ood_threshold_abstains(ood_bundle) -> None:
    folder, inside, crafted, gap = ood_bundle
    gated = Predictor(folder, lungs=None)
    assert gated.ood is not None and gated.ood.threshold == pytest.approx(gap / 2)
    ok, out = gated.predict_batch([inside, crafted])
    assert not ok.abstained and ok.ood_distance == pytest.approx(0.0, abs=1e-3)
    assert out.abstained and "outside what the model was trained on" in out.abstain_reason
    assert out.ood_distance == pytest.approx(gap, rel=1e-4) and out.abstain_gates == ("ood",)
    assert ok.abstain_gates == ()
    explained, _ = gated.predict_and_explain(crafted)  # the Grad-CAM path is gated the same way
    assert explained.abstained


def test_the_ood_gate_in_the_batch_path(ood_bundle, tmp_path: Path) -> None:
    folder, _, crafted, _ = ood_bundle
    path = write_image(tmp_path / "board.png", crafted.pixels)
    [r] = list(Predictor(folder, lungs=None).predict_paths([path], explain=True))
    assert r.prediction.abstained and "outside" in r.prediction.abstain_reason


def test_a_damaged_ood_file_is_refused_at_load(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(bundle, folder)
    (folder / OOD_FILE).write_bytes(b"not an npz")
    with pytest.raises(BundleError, match="OOD scorer"):
        Predictor(folder, lungs=None)


def test_an_ood_file_of_another_width_is_refused(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wrong"
    shutil.copytree(bundle, folder)
    FeatureGaussians(np.zeros((3, 5)), np.eye(5), 1.0, 0.99).save(folder)
    with pytest.raises(BundleError, match="expects 5 features"):
        Predictor(folder, lungs=None)


def test_an_older_bundle_without_ood_or_calibration_predicts_as_before(predictor: Predictor) -> None:
    """No ood.npz, no calibration: no OOD gate, the network's own probabilities."""
    assert predictor.ood is None and predictor.temperature == 1.0
    assert read_bundle_info(predictor.bundle_dir).ood is None
    image = xray_from_array(class_image(2, seed=5, size=48))
    x, _ = predictor.prepare(image)
    p = predictor.predict(image)
    np.testing.assert_allclose(p.probs, np.asarray(predictor.model(x[np.newaxis]))[0], rtol=1e-5, atol=1e-6)
    assert p.ood_distance is None and not p.abstained


# -- the ood block of model.json -----------------------------------------------------------------


def _info_dict(bundle: Path) -> dict:
    return json.loads((bundle / "model.json").read_text())


def test_the_ood_block_is_validated(bundle: Path) -> None:
    data = _info_dict(bundle)
    data["ood"] = {"file": "ood.npz", "quantile": 0.99, "threshold": 8.3, "validation_abstain_rate": 0.01}
    info = BundleInfo.from_dict(data)
    assert info.ood["threshold"] == 8.3 and info.to_dict()["ood"] == data["ood"]
    for bad in (
        {"file": "../elsewhere.npz", "quantile": 0.99, "threshold": 8.3},
        {"file": "ood.npz", "quantile": 1.5, "threshold": 8.3},
        {"file": "ood.npz", "quantile": 0.99, "threshold": -1},
        {"file": "ood.npz", "quantile": 0.99},
        {"file": "ood.npz", "quantile": 0.99, "threshold": 8.3, "validation_abstain_rate": 2},
        "ood.npz",
    ):
        data["ood"] = bad
        with pytest.raises(BundleError, match="ood"):
            BundleInfo.from_dict(data)


# -- fitting the scorer: calibrate and train -----------------------------------------------------


def _labelled_csv(folder: Path, per_class: int = 8, declare: bool = False) -> Path:
    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(per_class):
            path = write_image(folder / f"{cls}_{i}.png", class_image(ci, seed=50 * ci + i, size=48))
            split = ("val" if i % 3 == 0 else "train") if declare else ""
            rows.append((path.as_posix(), cls, f"{cls}-{i}", split, "site-a" if i % 2 else "site-b"))
    return write_csv(folder / "labels.csv", ("path", "label", "patient_id", "split", "source"), rows)


def test_calibrate_writes_the_ood_scorer_in_the_new_bundle(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    from training.calibration import calibrate_bundle

    monkeypatch.setattr("training.calibration.MIN_IMAGES", 10)  # small synthetic data; the floor has its own test

    data = _labelled_csv(tmp_path / "data")
    out, record = calibrate_bundle(bundle, data, tmp_path / "calibrated", version="0.0.2")
    info = read_bundle_info(out)
    assert info.version == "0.0.2" and info.calibration["temperature"] == record["temperature"]
    assert info.ood["file"] == OOD_FILE and info.ood["quantile"] == 0.99
    scorer = load_feature_gaussians(out)
    assert scorer.threshold == pytest.approx(info.ood["threshold"])
    assert info.ood["n_train"] + info.ood["n_val"] == 24  # two disjoint halves of the 24 images
    assert not (bundle / OOD_FILE).exists()  # the original is untouched
    assert Predictor(out, lungs=None).ood is not None


def test_calibrate_with_the_model_split_fits_on_its_own_validation_images(
    bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    from training.calibration import calibrate_bundle

    monkeypatch.setattr("training.calibration.MIN_IMAGES", 10)  # small synthetic data; the floor has its own test

    data = _labelled_csv(tmp_path / "data", per_class=12, declare=True)
    out, record = calibrate_bundle(bundle, data, tmp_path / "calibrated", model_split=True)
    info = read_bundle_info(out)
    # 4 of every 12 images per class are declared validation images: 12 of 36.
    assert record["n_images"] == 12 and info.ood["n_val"] == 12 and info.ood["n_train"] == 24
    assert "own validation split" in info.ood["fitted_on"]


@pytest.mark.slow
def test_training_saves_the_ood_scorer_inside_the_bundle(tmp_path: Path) -> None:
    from training.train import TrainConfig, train

    data = _labelled_csv(tmp_path / "data", per_class=12, declare=True)
    result = train(
        TrainConfig(data=data, out_dir=tmp_path / "model", arch="custom-cnn", epochs=1, image_size=32, batch_size=8)
    )
    info = read_bundle_info(result.bundle_dir)
    assert info.ood and info.ood["n_val"] == 12 and info.ood["n_train"] == 24
    assert 0.0 <= info.ood["validation_abstain_rate"] <= 1.0
    scorer = load_feature_gaussians(result.bundle_dir)
    assert scorer is not None and scorer.threshold == pytest.approx(info.ood["threshold"])
    assert Predictor(result.bundle_dir, lungs=None).ood is not None


# -- evaluate's coverage -------------------------------------------------------------------------


def test_evaluate_reports_coverage_and_metrics_on_the_covered_images(bundle: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate_bundle, metrics_markdown

    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(3):
            path = write_image(tmp_path / f"{cls}_{i}.png", class_image(ci, seed=10 * ci + i, size=48))
            rows.append((path.as_posix(), cls, "north"))
    # Two films out of scope: a lateral COVID-19 DICOM and a flat "Normal" image.
    lateral = tmp_path / "lateral.dcm"
    make_dicom(lateral, _film(), bits_stored=12, view_position="LL")
    flat = write_image(tmp_path / "flat.png", _nearly_flat(48))
    rows += [(lateral.as_posix(), "COVID-19", "south"), (flat.as_posix(), "Normal", "south")]
    data = write_csv(tmp_path / "data.csv", ("path", "label", "source"), rows)
    result = evaluate_bundle(bundle, data, lungs=None)
    assert result["n_total"] == 11 and result["n_covered"] == 9 and result["n_abstained"] == 2
    assert result["coverage"] == pytest.approx(9 / 11)
    assert result["abstained_per_class"] == {"COVID-19": 1, "Normal": 1, "Pneumonia": 0}
    assert result["abstained_by_gate"] == {"scope": 2, "lungs": 0, "ood": 0}
    assert result["n_images"] == 9 and sum(map(sum, result["confusion_matrix"]["matrix"])) == 9
    assert result["all_images"]["n_images"] == 11
    south = result["by_source"]["south"]
    assert south["n_images"] == 0 and south["n_total"] == 2 and south["coverage"] == 0.0
    assert result["by_source"]["north"]["coverage"] == 1.0
    text = metrics_markdown(result)
    assert "AI result on 9/11 images" in text and "COVID-19 1, Normal 1" in text
    json.dumps(result, allow_nan=False)


# -- JSON and CSV records ------------------------------------------------------------------------


def test_records_of_an_abstained_prediction(predictor: Predictor, tmp_path: Path) -> None:
    from inference.export.tables import records_to_csv, result_record

    lateral = tmp_path / "lateral.dcm"
    make_dicom(lateral, _film(), bits_stored=12, view_position="LL")
    good = write_image(tmp_path / "good.png", class_image(1, seed=9, size=48))
    results = list(predictor.predict_paths([lateral, good]))
    out, ok = (result_record(r) for r in results)
    assert out["label"] is None and out["class_index"] is None and out["abstained"] is True
    assert "Lateral view" in out["abstain_reason"]
    assert set(out["probabilities"]) == set(CLASSES)  # still there, on request
    assert ok["label"] in CLASSES and ok["abstained"] is False and ok["abstain_reason"] is None
    rows = list(csv.DictReader(io.StringIO(records_to_csv([out, ok]))))
    assert rows[0]["label"] == "" and rows[0]["abstained"] == "True" and "Lateral view" in rows[0]["abstain_reason"]
    assert rows[0]["p_Normal"] != ""
    assert rows[1]["label"] in CLASSES and rows[1]["abstained"] == "False" and rows[1]["abstain_reason"] == ""
