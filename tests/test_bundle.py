"""The model bundle: atomic writes that never damage a working model, and clear errors."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.bundle import BundleError, BundleInfo, read_bundle_info, write_bundle  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from tests.tiny_bundle import build_tiny_model  # noqa: E402


def _info(name: str = "tiny") -> BundleInfo:
    return BundleInfo(
        name=name,
        version="1.0.0",
        architecture="tiny",
        class_names=["COVID-19", "Normal", "Pneumonia"],
        preprocessing=PreprocessConfig(size=32),
        gradcam_layer="last_conv",
    )


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(size=32)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_written_bundle_reads_back_with_everything_needed(model, tmp_path):
    out = write_bundle(model, _info(), tmp_path / "m")
    info = read_bundle_info(out)
    assert info.class_names == ["COVID-19", "Normal", "Pneumonia"]
    assert info.preprocessing == PreprocessConfig(size=32)
    assert info.keras_version and info.tensorflow_version
    data = json.loads((out / "model.json").read_text())
    assert data["input"] == {"size": 32, "channels": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


def test_existing_bundle_is_kept_unless_overwrite_is_asked(model, tmp_path):
    out = write_bundle(model, _info("first"), tmp_path / "m")
    before = _snapshot(out)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(model, _info("second"), out)
    assert _snapshot(out) == before
    write_bundle(model, _info("second"), out, overwrite=True)
    assert read_bundle_info(out).name == "second"


def test_full_disk_leaves_the_old_bundle_intact(model, tmp_path, monkeypatch):
    out = write_bundle(model, _info("working"), tmp_path / "m")
    before = _snapshot(out)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save", no_space)
    with pytest.raises(BundleError, match="No space left on device.*Nothing was replaced"):
        write_bundle(model, _info("new"), out, overwrite=True)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.pop("class_names"), "no valid class list"),
        (lambda d: d.update(class_names=["A", "A"]), "names a class twice"),
        (lambda d: d.update(format="something-else"), "not a CXR Viewer model"),
        (lambda d: d.update(format_version=99), "newer version of the app"),
        (lambda d: d.pop("gradcam_layer"), "gradcam_layer"),
        (lambda d: d["preprocessing"].update(sharpen=True), "unknown preprocessing parameters: sharpen"),
    ],
)
def test_bad_descriptions_are_named(model, tmp_path, change, words):
    out = write_bundle(model, _info(), tmp_path / "m")
    data = json.loads((out / "model.json").read_text())
    change(data)
    (out / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=words):
        read_bundle_info(out)


def test_folder_problems_are_named(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        read_bundle_info(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        read_bundle_info(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="model.json is missing"):
        read_bundle_info(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text("{}")
    with pytest.raises(BundleError, match="model.keras is missing"):
        read_bundle_info(tmp_path / "half")
    (tmp_path / "half" / "model.keras").write_bytes(b"")
    (tmp_path / "half" / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read"):
        read_bundle_info(tmp_path / "half")


def test_unloadable_network_names_both_keras_versions(model, tmp_path):
    from inference.bundle import load_bundle

    out = write_bundle(model, _info(), tmp_path / "m")
    data = json.loads((out / "model.json").read_text())
    data["keras_version"] = "3.0.0"  # same major version: the difference may still be the cause
    (out / "model.json").write_text(json.dumps(data))
    (out / "model.keras").write_bytes(b"PK\x03\x04 not a real archive")
    with pytest.raises(BundleError, match=r"cannot be loaded.*saved with Keras 3\.0\.0; this app has Keras 3\."):
        load_bundle(out)
