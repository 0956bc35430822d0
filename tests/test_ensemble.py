"""Ensemble bundles (training.ensemble): the merged network is the mean of its members' scaled
logits, loads and predicts as any bundle, explains with the mean of its members' Grad-CAM maps,
and bad merges are refused with a message. Old bundles (one Grad-CAM layer) work as before."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.bundle import BundleError, BundleInfo, load_bundle, read_bundle_info, write_bundle  # noqa: E402
from inference.calibration import softmax  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from tests.tiny_bundle import edited_bundle, make_tiny_bundle, xray_from_array  # noqa: E402
from tests.training_data import class_image, make_class_folder  # noqa: E402
from training.ensemble import EnsembleError, merge_bundles  # noqa: E402

T_A, T_B = 2.0, 0.5


def _coarse_bundle(out: Path, size: int = 32, classes=("COVID-19", "Normal", "Pneumonia"), seed: int = 3) -> Path:
    """A second kind of member: its Grad-CAM layer is on an 8x8 grid (the tiny bundle's: 16x16)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling2D(4, name="pool_a")(x)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = layers.Dropout(0.3, name="head_dropout")(x)
    logits = layers.Dense(len(classes), name="logits")(x)
    outputs = layers.Activation("softmax", name="predictions")(logits)
    info = BundleInfo(
        name="coarse-test",
        version="0.0.2",
        architecture="tiny-coarse",
        class_names=list(classes),
        preprocessing=PreprocessConfig(size=size, channels=1),
        gradcam_layer="top_activation",
    )
    return write_bundle(keras.Model(inputs, outputs), info, out)


def _with(bundle: Path, dest: Path, temperature: float | None = None, **training) -> Path:
    """A copy of ``bundle`` with a temperature and/or ``training`` fields in its model.json."""

    def edit(data: dict) -> None:
        if temperature is not None:
            data["calibration"] = {"temperature": temperature, "fitted_on": "test"}
        data["training"].update(training)
        data["metrics"] = {"val": {"accuracy": 0.5, "n_images": 40, "ece": 0.1}}

    return edited_bundle(bundle, dest, edit)


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("members")
    a = _with(make_tiny_bundle(root / "a0", seed=0, name="tiny-a"), root / "a", T_A)
    b = _with(_coarse_bundle(root / "b0"), root / "b", T_B)
    return a, b


@pytest.fixture(scope="module")
def merged(members, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ensemble"
    return merge_bundles(members, out, "tiny-ensemble", "0.1.0", "the mean of two tiny networks")


def _inputs(n: int = 4, size: int = 32) -> np.ndarray:
    return np.stack([class_image(i % 3, seed=10 + i, size=size) for i in range(n)]).astype(np.float32)[..., None] / 255


def _logits(bundle: Path, x: np.ndarray) -> np.ndarray:
    import keras

    model, _ = load_bundle(bundle)
    return keras.Model(model.inputs[0], model.get_layer("logits").output)(x).numpy()


def test_merged_logits_are_the_mean_of_the_members_scaled_logits(members, merged) -> None:
    x = _inputs()
    expected = (_logits(members[0], x) / T_A + _logits(members[1], x) / T_B) / 2
    np.testing.assert_allclose(_logits(merged, x), expected, atol=1e-5)


def test_the_merged_bundle_is_an_ordinary_flat_bundle(merged) -> None:
    import keras

    from training.ood_fit import logits_and_features

    model, info = load_bundle(merged)  # the normal loader: Keras safe mode, archive checks
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one flat graph, no nesting
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    assert info.cam_layers == ["m0_last_conv", "m1_top_activation"] and info.gradcam_layer == "m0_last_conv"
    assert [m["name"] for m in info.training["ensemble"]["members"]] == ["tiny-a", "coarse-test"]
    assert info.architecture == "ensemble:tiny-cnn-gap+tiny-coarse" and info.calibration is None
    # The OOD scorer's features are the members' concatenated features (16 + 12).
    _, features = logits_and_features(model, (_inputs()[..., 0] * 255).astype(np.uint8), info.preprocessing)
    assert features is not None and features.shape == (4, 28)
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert "tiny-a 0.0.1" in card and "coarse-test 0.0.2" in card and "20/40 = 0.500" in card
    assert "0.100 (as recorded)" in card  # the members carry no ece_after: their metrics figure, labelled
    assert "mean of the members' maps" in card
    import zipfile

    with zipfile.ZipFile(merged / "model.keras") as z:  # never compiled: no optimizer state
        assert not any("optimizer" in n for n in z.namelist())


def test_the_predictor_gives_the_mean_of_the_members(members, merged) -> None:
    from inference.predictor import Predictor

    pixels = class_image(2, seed=7, size=32)
    predictor = Predictor(merged, lungs=None)
    prediction = predictor.predict(xray_from_array(pixels))
    x = predictor.prepare(xray_from_array(pixels))[0][None]
    mean = (_logits(members[0], x) / T_A + _logits(members[1], x) / T_B) / 2
    np.testing.assert_allclose(prediction.probs, softmax(mean)[0], atol=1e-5)
    explained, explanation = predictor.predict_and_explain(xray_from_array(pixels))
    np.testing.assert_allclose(explained.probs, prediction.probs, atol=1e-5)
    assert explanation.cam.shape == (32, 32) and explanation.heatmap_model.shape == (32, 32)
    assert explanation.cam.min() >= 0.0 and explanation.cam.max() <= 1.0


def test_gradcam_over_two_layers_is_the_mean_of_the_single_layer_maps(members, merged) -> None:
    from inference.gradcam import CamEngine, combine_maps, normalise_maps, upsample

    model, info = load_bundle(merged)
    x = _inputs(3)
    both = CamEngine(model, info.cam_layers)
    probs, chosen, maps = both.run(x)
    assert maps.shape == (3, 32, 32) and maps.max() <= 1.0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    # Each layer alone (its raw map, before normalisation), from the same network and classes.
    raw = [CamEngine(model, name).raw(x, chosen)[2][0] for name in info.cam_layers]
    assert raw[0].shape == (3, 16, 16) and raw[1].shape == (3, 8, 8)
    scaled = [np.stack([cv2_resize(r[i] * r.shape[1] * r.shape[2], 32) for i in range(3)]) for r in raw]
    np.testing.assert_allclose(maps, normalise_maps((scaled[0] + scaled[1]) / 2), atol=1e-5)
    np.testing.assert_allclose(combine_maps(raw, (32, 32)), (scaled[0] + scaled[1]) / 2, rtol=1e-5, atol=1e-7)
    # The additive head: member A's map inside the ensemble is its own map scaled by 1 / (n T_A).
    own, _ = load_bundle(members[0])
    own_raw = CamEngine(own, "last_conv").raw(x, chosen)[2]
    np.testing.assert_allclose(raw[0], own_raw[0] / (2 * T_A), rtol=1e-4, atol=1e-6)
    # One layer alone: the map normalised on its own grid, as before ensembles existed.
    _, _, single = CamEngine(model, "m0_last_conv").run(x, chosen)
    np.testing.assert_allclose(single, normalise_maps(raw[0]), atol=1e-6)
    assert upsample(single[0], (32, 32)).shape == (32, 32)


def cv2_resize(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(a.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def test_an_old_bundle_without_gradcam_layers_works_as_before(members, tmp_path: Path) -> None:
    from inference.predictor import Predictor

    data = json.loads((members[0] / "model.json").read_text(encoding="utf-8"))
    assert "gradcam_layers" not in data
    info = read_bundle_info(members[0])
    assert info.gradcam_layers == [] and info.cam_layers == ["last_conv"]
    assert "gradcam_layers" not in info.to_dict()
    _, explanation = Predictor(members[0], lungs=None).predict_and_explain(xray_from_array(class_image(0, 1, 32)))
    assert explanation.cam.shape == (16, 16)  # still on the layer's own grid
    # A list that disagrees with gradcam_layer, or names a layer the network lacks, is refused.
    bad = edited_bundle(members[0], tmp_path / "bad", lambda d: d.update(gradcam_layers=["conv1", "last_conv"]))
    with pytest.raises(BundleError, match="first of gradcam_layers"):
        read_bundle_info(bad)
    lacks = edited_bundle(members[0], tmp_path / "lacks", lambda d: d.update(gradcam_layers=["last_conv", "nope"]))
    with pytest.raises(BundleError, match="'nope', which the network lacks"):
        load_bundle(lacks)


def test_members_that_do_not_match_are_refused(members, tmp_path: Path) -> None:
    other_classes = make_tiny_bundle(tmp_path / "abc", classes=("A", "B", "C"))
    with pytest.raises(EnsembleError, match="same classes in the same order"):
        merge_bundles([members[0], other_classes], tmp_path / "x1", "e", "1.0.0")
    clahe = edited_bundle(members[0], tmp_path / "clahe", lambda d: d["preprocessing"].update(clahe=True))
    with pytest.raises(EnsembleError, match=r"prepare their input differently \(clahe False vs True\)"):
        merge_bundles([members[1], clahe], tmp_path / "x2", "e", "1.0.0")
    with pytest.raises(EnsembleError, match="not a folder"):
        merge_bundles([members[0], tmp_path / "missing"], tmp_path / "x3", "e", "1.0.0")
    with pytest.raises(EnsembleError, match="named twice"):
        merge_bundles([members[0], members[0]], tmp_path / "x4", "e", "1.0.0")
    assert not any((tmp_path / f"x{i}").exists() for i in range(1, 5))


def test_the_cli_refuses_an_existing_out_and_a_missing_folder(members, tmp_path: Path, capsys) -> None:
    import main

    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main.main(["ensemble", str(members[0]), str(members[1]), "--out", str(existing)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert main.main(["ensemble", str(members[0]), str(tmp_path / "gone"), "--out", str(tmp_path / "new")]) == 1
    assert "no model folder at" in capsys.readouterr().err and not (tmp_path / "new").exists()
    with pytest.raises(EnsembleError, match="already exists"):
        merge_bundles(members, existing, "e", "1.0.0")


def test_calibrating_on_the_members_split_uses_their_validation_images_only(tmp_path: Path, monkeypatch) -> None:
    import main
    from training import calibration
    from training.datasets import discover
    from training.ood_fit import recreate_split

    monkeypatch.setattr(calibration, "MIN_IMAGES", 20)
    data = tmp_path / "data"
    make_class_folder(data, {"COVID-19": 30, "Normal": 30, "Pneumonia": 30}, size=32)
    split = {"val_fraction": 0.4, "test_fraction": 0.0, "seed": 0, "val_sources": []}
    a = _with(make_tiny_bundle(tmp_path / "a0", seed=0), tmp_path / "a", 1.5, config={**split, "frontal_only": True})
    b = _with(
        _coarse_bundle(tmp_path / "b0"), tmp_path / "b", 0.8, config={**split, "frontal_only": True, "exclude": ["x"]}
    )
    out = tmp_path / "ens"
    argv = ["ensemble", str(a), str(b), "--out", str(out), "--name", "cxr-ens", "--version", "0.2.0"]
    assert main.main([*argv, "--data", str(data)]) == 0
    info = read_bundle_info(out)
    samples = discover(data, None, min_classes=1, min_per_class=1).samples
    parts = recreate_split(samples, {"config": split})
    assert info.calibration is not None and info.calibration["n_images"] == len(parts["val"]) < len(samples)
    assert info.ood is not None and info.ood["n_train"] == len(parts["train"])
    assert info.ood["n_val"] == len(parts["val"]) and (out / "ood.npz").is_file()
    assert info.training["config"] == {**split, "frontal_only": True}  # what every member agrees on
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"{info.calibration['temperature']:g}" in card and "## Members" in card
    # The explain pass reads the OOD features from its own forward pass: the same distance as predict.
    from inference.predictor import Predictor

    predictor = Predictor(out, lungs=None)
    image = xray_from_array(class_image(0, seed=3, size=32))
    plain, (explained, _) = predictor.predict(image), predictor.predict_and_explain(image)
    assert plain.ood_distance is not None
    assert explained.ood_distance == pytest.approx(plain.ood_distance, rel=1e-4)
    [result] = predictor.predict_paths([next(data.rglob("*.png"))], explain=True)
    assert result.prediction.ood_distance is not None and result.explanation.cam.shape == (32, 32)
    # Members split differently: no "own validation images" to calibrate on.
    c = _with(_coarse_bundle(tmp_path / "c0"), tmp_path / "c", config={**split, "seed": 1})
    with pytest.raises(EnsembleError, match="members' own split"):
        merge_bundles([a, c], tmp_path / "ens2", "e", "1.0.0", data=data)
    assert not (tmp_path / "ens2").exists()


def test_adapting_an_ensemble_keeps_its_grad_cam_layers(tmp_path: Path) -> None:
    import main

    films = tmp_path / "films"
    make_class_folder(films, {"COVID-19": 40, "Normal": 40, "Pneumonia": 40}, size=32)
    a = make_tiny_bundle(tmp_path / "a", head="flatten", seed=0)  # flattened: keeps where things are
    b = make_tiny_bundle(tmp_path / "b", seed=1)
    parent = merge_bundles([a, b], tmp_path / "ens", "tiny-ens", "1.0.0")
    out = tmp_path / "child"
    assert main.main(["adapt", str(films), "--init", str(parent), "--out", str(out)]) == 0
    info = read_bundle_info(out)
    assert info.version == "1.0.0-adapted.1" and info.cam_layers == ["m0_last_conv", "m1_last_conv"]
    from inference.predictor import Predictor

    _, explanation = Predictor(out, lungs=None).predict_and_explain(xray_from_array(class_image(1, 5, 32)))
    assert explanation.cam.shape == (32, 32)
