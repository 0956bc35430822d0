"""Hostile and broken model folders (issue 17): one clear BundleError at load, on every path.

Every folder here is a real tiny bundle (``tests/tiny_bundle.py``) with one thing broken, so a
test fails only for the reason it names.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference import model_folder as mf  # noqa: E402
from inference.bundle import BundleError, load_bundle, read_bundle_info, write_bundle  # noqa: E402
from inference.lungs import LungModelError, read_lung_card  # noqa: E402
from tests.tiny_bundle import build_tiny_model, edited_bundle, make_tiny_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("mf") / "tiny", size=32)


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


# ---------------------------------------------------------------------------------------------
# model.json: one schema validation


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set("format_version", "1"), "'format_version' must be a whole number"),
        (_set("format_version", [1]), "'format_version' must be a whole number"),
        (_set("format_version", True), "'format_version' must be a whole number"),
        (_set("training", []), "'training' must be an object"),
        (_set("metrics", "accuracy 0.99"), "'metrics' must be an object"),
        (_set("name", ["a"]), "'name' must be text"),
        (_set("name", "x" * 101), "'name' is longer than 100"),
        (_set("name", "bad\x07name"), "control characters"),
        (_set("version", "1.0 <script>"), "not allowed"),
        (_set("gradcam_layer", 3), "'gradcam_layer' must be text"),
        (_set("class_names", ["Normal", "<img src=x onerror=alert(1)>"]), "not allowed"),
        (_set("class_names", ["Normal", "P" * 65]), "class_names"),
        (_set("class_names", [f"c{i}" for i in range(101)]), "class_names"),
        (_set("class_names", ["Normal", 3]), "class_names"),
        (_set("description", {"text": "x"}), "'description' must be text"),
        (_set("keras_version", 3), "'keras_version' must be text"),
        (_set("input", {"size": 64, "channels": 1}), "'input' says 64 px"),
        (_set("input", "224"), "'input' must be an object"),
        (_set("preprocessing", None), "preprocessing"),
        (_set("preprocessing", [1, 2]), "preprocessing"),
    ],
)
def test_malformed_description_is_one_clear_error(tiny, tmp_path, edit, words):
    bad = edited_bundle(tiny, tmp_path / "bad", edit)
    with pytest.raises(BundleError, match=words):
        read_bundle_info(bad)


# Every preprocessing parameter reaches OpenCV or numpy: each bad value must be refused here.
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("clahe_tiles", 0),  # SIGFPE in cv2.createCLAHE(...).apply: killed predict, training and the viewer
        ("clahe_tiles", -1),
        ("clahe_tiles", 100000),
        ("clahe_tiles", 8.5),
        ("clahe_tiles", "8"),
        ("clahe_clip", -1.0),
        ("clahe_clip", 1e308),
        ("clahe", "yes"),
        ("size", 0),
        ("size", -32),
        ("size", 10**6),
        ("size", "32"),
        ("channels", 2),
        ("channels", 0),
        ("crop", "eyes"),
        ("crop", None),
        ("crop_margin", 5.0),
        ("crop_margin", -0.1),
    ],
)
def test_preprocessing_parameters_are_range_checked(tiny, tmp_path, key, value):
    bad = edited_bundle(tiny, tmp_path / "bad", _set("preprocessing", key, value))
    with pytest.raises(BundleError, match=key):
        read_bundle_info(bad)


def test_non_finite_numbers_are_refused(tiny, tmp_path):
    text = (tiny / "model.json").read_text().replace('"clahe_clip": 2.0', '"clahe_clip": NaN')
    assert "NaN" in text
    bad = edited_bundle(tiny, tmp_path / "bad", lambda d: text)
    with pytest.raises(BundleError, match="clahe_clip"):
        read_bundle_info(bad)


def test_deeply_nested_json_is_refused_without_recursion_error(tiny, tmp_path):
    deep = edited_bundle(tiny, tmp_path / "deep", lambda d: '{"a": ' * 200_000 + "1" + "}" * 200_000)
    with pytest.raises(BundleError, match="nested too deeply|cannot be read"):
        read_bundle_info(deep)
    nested = {"x": 1}
    for _ in range(40):
        nested = {"x": nested}
    moderately = edited_bundle(tiny, tmp_path / "moderately", _set("training", nested))
    with pytest.raises(BundleError, match="nested too deeply"):
        read_bundle_info(moderately)


def test_oversized_description_is_refused_before_parsing(tiny, tmp_path):
    big = edited_bundle(tiny, tmp_path / "big", _set("metrics", {"note": "x" * (mf.MAX_INFO_BYTES + 10)}))
    with pytest.raises(BundleError, match="at most"):
        read_bundle_info(big)


def test_unknown_top_level_fields_are_ignored_for_newer_writers(tiny, tmp_path):
    ok = edited_bundle(tiny, tmp_path / "ok", _set("calibration", {"temperature": 1.3}))
    assert read_bundle_info(ok).name == "tiny-test"


def test_lung_card_uses_the_same_validation(tmp_path):
    shipped = ROOT / "resources" / "models" / "lungs"
    assert read_lung_card(shipped).outputs == ["visible", "whole"]
    for edit, words in (
        (_set("preprocessing", "clahe_tiles", 0), "clahe_tiles"),
        (_set("threshold", 1.5), "threshold"),
        (_set("threshold", "0.5"), "threshold"),
        (_set("outputs", "visible"), "outputs"),
        (_set("format_version", "1"), "format_version"),
        (_set("metrics", "fake"), "metrics"),
    ):
        folder = tmp_path / f"lungs-{len(list(tmp_path.iterdir()))}"
        bad = edited_bundle(shipped, folder, edit)
        with pytest.raises(LungModelError, match=words):
            read_lung_card(bad)
    assert issubclass(LungModelError, BundleError)  # every caller reports a bad lung model the same way


def test_hostile_model_exits_2_with_a_message_in_predict(tiny, tmp_path):
    """``clahe_tiles: 0`` killed predict with SIGFPE (exit 136); now: exit 2, one readable line."""
    import cv2

    bad = edited_bundle(tiny, tmp_path / "bad", _set("preprocessing", "clahe_tiles", 0))
    data = json.loads((bad / "model.json").read_text())
    data["preprocessing"]["clahe"] = True
    (bad / "model.json").write_text(json.dumps(data))
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "predict", str(image), "--model", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "clahe_tiles" in run.stderr and "Traceback" not in run.stderr


def test_train_init_with_a_hostile_model_exits_2(tiny, tmp_path, capsys):
    import main

    bad = edited_bundle(tiny, tmp_path / "bad", _set("training", []))
    rc = main.main(["train", str(tmp_path / "nodata"), "--out", str(tmp_path / "out"), "--init", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "'training' must be an object" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_evaluate_with_a_hostile_model_exits_2(tiny, tmp_path, capsys):
    import main
    from tests.training_data import make_class_folder

    bad = edited_bundle(tiny, tmp_path / "bad", _set("metrics", "accuracy 0.99"))
    make_class_folder(tmp_path / "d", {"A": 2, "B": 2})
    rc = main.main(["evaluate", str(tmp_path / "d"), "--model", str(bad), "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "'metrics' must be an object" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# The network: one input, one output of the described shape


def _bundle_with_network(tiny: Path, dest: Path, model) -> Path:
    folder = edited_bundle(tiny, dest)
    (folder / "model.keras").unlink()
    model.save(folder / "model.keras")
    return folder


def test_a_network_with_two_inputs_is_refused_at_load(tiny, tmp_path):
    import keras

    a, b = keras.Input((32, 32, 1), name="a"), keras.Input((32, 32, 1), name="b")
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(4, 3, padding="same", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    folder = _bundle_with_network(tiny, tmp_path / "two", keras.Model([a, b], out))
    with pytest.raises(BundleError, match="2 input"):
        load_bundle(folder)


def test_an_output_that_does_not_match_the_classes_is_refused_at_load(tiny, tmp_path):
    folder = _bundle_with_network(tiny, tmp_path / "four", build_tiny_model(32, n_classes=4))
    with pytest.raises(BundleError, match="3 output"):
        load_bundle(folder)


def test_a_spatial_output_is_refused_at_load(tiny, tmp_path):
    import keras

    inp = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", name="last_conv")(inp)
    folder = _bundle_with_network(tiny, tmp_path / "maps", keras.Model(inp, x))
    with pytest.raises(BundleError, match="outputs of shape"):
        load_bundle(folder)


def test_a_gradcam_layer_without_spatial_output_is_refused_at_load(tiny, tmp_path):
    bad = edited_bundle(tiny, tmp_path / "flat", _set("gradcam_layer", "logits"))
    with pytest.raises(BundleError, match="no spatial output"):
        load_bundle(bad)


# ---------------------------------------------------------------------------------------------
# model.keras as a zip: checked before Keras extracts anything


@pytest.fixture
def keras_never_loads(monkeypatch):
    import keras

    def fail(*args, **kwargs):
        raise AssertionError("Keras was asked to open an archive that should have been refused")

    monkeypatch.setattr(keras.saving, "load_model", fail)


def _replace_archive(tiny: Path, dest: Path, write) -> Path:
    folder = edited_bundle(tiny, dest)
    (folder / "model.keras").unlink()
    with zipfile.ZipFile(folder / "model.keras", "w", zipfile.ZIP_DEFLATED) as z:
        write(z)
    return folder


def test_a_compression_bomb_is_refused_before_extraction(tiny, tmp_path, keras_never_loads):
    zeros = bytes(64 * 1024 * 1024)  # 64 MB that deflate to ~64 KB (ratio ~1000)

    def write(z):
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", zeros)

    folder = _replace_archive(tiny, tmp_path / "bomb", write)
    assert (folder / "model.keras").stat().st_size < 1024 * 1024
    with pytest.raises(BundleError, match="ratio.*Refused"):
        load_bundle(folder)


def test_a_declared_size_over_the_limit_is_refused(tiny, tmp_path, keras_never_loads):
    folder = _replace_archive(tiny, tmp_path / "declared", lambda z: z.writestr("model.weights.h5", b"x" * 100))
    path = folder / "model.keras"
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")  # the central directory entry: uncompressed size at offset 24
    raw[central + 24 : central + 28] = struct.pack("<I", 0xF0000000)  # declares ~4 GB
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="GB.*Refused"):
        load_bundle(folder)


def test_an_archive_with_thousands_of_members_is_refused(tiny, tmp_path, keras_never_loads):
    def write(z):
        for i in range(mf.MAX_ARCHIVE_MEMBERS + 1):
            z.writestr(f"assets/{i}", b"")

    folder = _replace_archive(tiny, tmp_path / "many", write)
    with pytest.raises(BundleError, match="files.*Refused"):
        load_bundle(folder)


def test_the_shipped_models_pass_the_archive_checks():
    mf.check_archive(ROOT / "resources" / "models" / "default" / "model.keras")
    mf.check_archive(ROOT / "resources" / "models" / "lungs" / "model.keras")


# ---------------------------------------------------------------------------------------------
# Writing and stale temporary folders


def test_write_adds_a_card_and_refuses_a_bad_description(tmp_path):
    from inference.bundle import BundleInfo
    from inference.preprocess import PreprocessConfig

    model = build_tiny_model(32)
    info = BundleInfo("tiny", "1.0.0", "tiny", ["A", "B", "C"], PreprocessConfig(size=32), "last_conv")
    out = write_bundle(model, info, tmp_path / "m")
    card = (out / "README.md").read_text()
    assert card.startswith("# Model: tiny 1.0.0") and "Research use only" in card
    info.preprocessing = PreprocessConfig(size=32, clahe=True, clahe_tiles=0)
    with pytest.raises(BundleError, match="clahe_tiles"):
        write_bundle(model, info, tmp_path / "n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_temporary_folders_are_cleaned_at_start(tiny, tmp_path, monkeypatch):
    import tempfile

    models = tmp_path / "models"
    models.mkdir()
    stale = models / ".m.abcd1234.tmp"
    fresh = models / ".m.wxyz6789.tmp"  # a save in progress in another process
    other = models / ".config"  # not ours
    for p in (stale, fresh, other):
        p.mkdir()
        (p / "model.keras").write_bytes(b"partial")
    orphan = edited_bundle(tiny, models / ".working.old")  # killed between the two renames
    for p in (stale, other, orphan):
        _age(p, 2 * mf.STALE_AFTER_S)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    old_report, new_report = temp_root / "cxr-train-report-old1", temp_root / "cxr-train-report-new1"
    for p in (old_report, new_report):
        p.mkdir()
    _age(old_report, 2 * mf.STALE_AFTER_S)

    removed = mf.clean_stale_temp_folders(models, reports=True)
    assert set(removed) == {stale, old_report}
    assert fresh.exists() and other.exists() and new_report.exists()
    assert not orphan.exists() and read_bundle_info(models / "working").name == "tiny-test"  # put back

    # Writing a model cleans its parent folder the same way.
    _age(fresh, 2 * mf.STALE_AFTER_S)
    write_bundle(build_tiny_model(32), read_bundle_info(tiny), models / "new")
    assert not fresh.exists()


def test_training_cleans_stale_report_folders(tmp_path, monkeypatch):
    import tempfile

    from training.train import check_output_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = tmp_path / "cxr-train-report-abc"
    old.mkdir()
    _age(old, 2 * mf.STALE_AFTER_S)
    assert check_output_folder(tmp_path / "out", overwrite=False) is False
    assert not old.exists()


# ---------------------------------------------------------------------------------------------
# Import into the user's models folder, and listing


@pytest.fixture
def store(tmp_path, monkeypatch, tiny):
    """The model store with a private user models folder and the tiny bundle as the bundled model."""
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))
    from viewer import model_store

    bundled = edited_bundle(tiny, tmp_path / "bundled", _set("description", "bundled"))
    monkeypatch.setattr(model_store, "bundled_model_dir", lambda: bundled)
    return model_store


def test_import_copies_regular_files_only_and_never_follows_links(store, tiny, tmp_path):
    src = edited_bundle(tiny, tmp_path / "src")
    (src / "report").mkdir()
    (src / "report" / "report.md").write_text("# report")
    (src / "up").symlink_to("..")  # copied recursively, this filled the disk
    (src / "passwd").symlink_to("/etc/passwd")  # landed in the models folder as a copy
    (src / "report" / "loop").symlink_to(src)
    dest = store.import_bundle(src)
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert found == ["README.md", "model.json", "model.keras", "report", "report/report.md"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_import_refuses_linked_model_files(store, tiny, tmp_path):
    src = edited_bundle(tiny, tmp_path / "src")
    real = tmp_path / "elsewhere.json"
    (src / "model.json").rename(real)
    (src / "model.json").symlink_to(real)
    with pytest.raises(BundleError, match="is a link"):
        store.import_bundle(src)
    assert not store.user_models_dir().exists() or not any(store.user_models_dir().iterdir())


def test_import_caps_the_total_size_and_validates_before_copying(store, tiny, tmp_path, monkeypatch):
    src = edited_bundle(tiny, tmp_path / "src")
    (src / "big.bin").write_bytes(b"\0" * 4096)
    monkeypatch.setattr(store, "MAX_IMPORT_BYTES", (src / "model.keras").stat().st_size + 1024)
    with pytest.raises(BundleError, match="holds more than"):
        store.import_bundle(src)
    hostile = edited_bundle(tiny, tmp_path / "hostile", _set("preprocessing", "clahe_tiles", 0))
    with pytest.raises(BundleError, match="clahe_tiles"):
        store.import_bundle(hostile)
    assert not store.user_models_dir().exists() or not any(store.user_models_dir().iterdir())


def test_importing_the_same_model_twice_says_it_is_installed(store, tiny, tmp_path):
    src = edited_bundle(tiny, tmp_path / "src", _set("description", "mine"))
    first = store.import_bundle(src)
    with pytest.raises(store.ModelAlreadyInstalled, match="already installed") as info:
        store.import_bundle(src)
    assert info.value.path == first
    with pytest.raises(store.ModelAlreadyInstalled, match="the bundled model"):
        store.import_bundle(edited_bundle(tiny, tmp_path / "copy-of-bundled", _set("description", "bundled")))
    assert [e.path for e in store.list_models() if not e.bundled] == [first]


def test_a_broken_model_does_not_stop_the_listing(store, tiny, tmp_path):
    root = store.user_models_dir()
    root.mkdir(parents=True)
    edited_bundle(tiny, root / "a-good")
    edited_bundle(tiny, root / "b-deep", lambda d: "[" * 100_000 + "]" * 100_000)
    edited_bundle(tiny, root / "c-training-list", _set("training", []))
    edited_bundle(tiny, root / "d-tiles", _set("preprocessing", "clahe_tiles", 0))
    (root / "e-json-is-a-folder").mkdir()
    (root / "e-json-is-a-folder" / "model.json").mkdir()
    (root / "e-json-is-a-folder" / "model.keras").write_bytes(b"")
    entries = {e.path.name: e for e in store.list_models() if not e.bundled}
    assert sorted(entries) == ["a-good", "b-deep", "c-training-list", "d-tiles", "e-json-is-a-folder"]
    assert entries["a-good"].info is not None and not entries["a-good"].error
    for name in ("b-deep", "c-training-list", "d-tiles", "e-json-is-a-folder"):
        assert entries[name].info is None and entries[name].error


# ---------------------------------------------------------------------------------------------
# The model card: plain text only


def test_model_card_renders_fields_as_plain_text(tiny):
    from viewer.model_card import error_card_html, model_card_html

    info = read_bundle_info(tiny)
    info.description = "<h1>Approved by the FDA</h1>"
    info.training = {
        "data": {"counts": {"train": {"Normal": "<b>1000000</b>"}}, "sources": {"<i>x</i>": {"train": "<u>9</u>"}}},
        "config": {"val_sources": ["<s>s</s>"]},
        "hardware": "<script>alert(1)</script>",
        "epochs_run": 1,
    }
    info.metrics = {
        "val": {
            "accuracy": "<font size=7>0.999</font>",
            "macro_f1": "0.999",
            "n_images": 10,
            "per_class": {"<img src=x>": {"recall": "<b>1.0</b>", "support": 3}, "Normal": "oops"},
            "confusion_matrix": {"classes": ["A", "B"], "matrix": [["<b>9</b>", 1], [0, 1]]},
            "by_source": {"<em>src</em>": {"n_images": "<b>5</b>", "accuracy": 0.5}},
        },
        "test": "<table>fake</table>",
    }
    html = model_card_html(info, "<p>path</p>")
    for tag in (
        "<h1>",
        "<font",
        "<img",
        "<b>1000000",
        "<b>1.0",
        "<b>9</b>",
        "<b>5",
        "<script",
        "<u>",
        "<i>x",
        "<s>",
        "<em>",
        "<table>fake",
        "<p>p",
    ):
        assert tag not in html, tag
    assert "&lt;h1&gt;Approved" in html
    assert "0.999" not in html  # a text in a figure's place is not shown as a figure
    assert "<h2>" in error_card_html("<b>x</b>", "<img src=x>") and "<img" not in error_card_html("n", "<img src=x>")


def test_a_broken_remembered_model_falls_back_to_the_bundled_one(store, tiny, tmp_path):
    bundled = store.bundled_model_dir()
    good = edited_bundle(tiny, tmp_path / "good")
    assert store.startup_model_dir(str(good)) == (good, None)
    assert store.startup_model_dir("") == (bundled, None)
    for edit in (_set("preprocessing", "clahe_tiles", 0), _set("format_version", [1]), lambda d: "[" * 100_000):
        bad = edited_bundle(tiny, tmp_path / f"bad{len(list(tmp_path.iterdir()))}", edit)
        path, why = store.startup_model_dir(str(bad))
        assert path == bundled and "starting with the bundled model" in why
    assert store.startup_model_dir(str(tmp_path / "deleted"))[0] == bundled


def test_the_predictor_refuses_a_hostile_model_before_any_image(tiny, tmp_path):
    """The viewer's worker and ``predict`` load through Predictor: the model fails to load (the
    viewer shows "no model"), instead of the process dying at the first image."""
    from inference.predictor import Predictor

    bad = edited_bundle(tiny, tmp_path / "bad", _set("preprocessing", "clahe_tiles", 0))
    with pytest.raises(BundleError, match="clahe_tiles"):
        Predictor(bad, lungs=None)


def test_training_refuses_class_names_the_description_would_refuse_before_training(tmp_path):
    """Otherwise the save would fail after the whole training run."""
    import cv2

    from training.samples import DatasetError
    from training.train import TrainConfig, train

    for label in ("Normal", 'Pneu"monia<b>'):
        for i in range(5):
            path = tmp_path / "data" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((40, 40), 50 * i + 20, np.uint8))
    config = TrainConfig(data=tmp_path / "data", out_dir=tmp_path / "out", init="scratch", image_size=32, epochs=1)
    with pytest.raises(DatasetError, match="--class-map"):
        train(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        ({"class_name": "Dense", "config": {"units": 10**9}}, "units = 1,000,000,000"),
        ({"class_name": "InputLayer", "config": {"batch_shape": [None, 10**6, 10**6, 1]}}, "shape"),
    ],
)
def test_a_network_description_that_would_allocate_gigabytes_is_refused(
    tiny, tmp_path, keras_never_loads, layer, words
):
    config = {"class_name": "Functional", "config": {"layers": [layer]}}
    folder = _replace_archive(tiny, tmp_path / "huge", lambda z: z.writestr("config.json", json.dumps(config)))
    with pytest.raises(BundleError, match=words):
        load_bundle(folder)


def test_training_refuses_preprocessing_the_description_would_refuse(tmp_path, capsys):
    import main

    rc = main.main(
        ["train", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--init", "scratch", "--image-size", "5000"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "'size' must be between 8 and 2048" in err and "Traceback" not in err
