"""``main.py --self-test``: passes on a working model, fails clearly without one, runs from source."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.paths import bundled_model_dir, sample_files  # noqa: E402
from inference.selftest import MODEL_DIR_ENV, run_self_test  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
needs_samples = pytest.mark.skipif(not sample_files(), reason="no bundled samples")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("selftest") / "model", size=32)


@needs_samples
def test_self_test_passes_with_a_model(tiny_model):
    out = io.StringIO()
    assert run_self_test(model_dir=tiny_model, out=out) == 0
    report = json.loads(out.getvalue())
    assert report["ok"] is True and report["device"]
    assert report["model"]["name"] == "tiny-test"
    assert {"tensorflow", "keras", "pydicom"} <= set(report["versions"])
    formats = [r["format"] for r in report["results"]]
    assert formats == ["PNG", "DICOM"]  # the shipped PNG and JPEG 2000 DICOM samples, nothing made up
    assert report["dicom_source"] == "bundled sample"
    assert report["results"][1]["transfer_syntax"] != "Explicit VR Little Endian"  # really compressed
    assert sum(report["results"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    names = set(report["exports"])
    assert {"case0.cxr.png", "case0.cxr.pdf", "case0.cxr.dcm", "summary.json", "summary.csv"} <= names
    assert all(size > 0 for size in report["exports"].values())
    assert all(t >= 0 for t in report["timings_s"].values())


def test_self_test_fails_clearly_without_a_model(tmp_path, capsys):
    out = io.StringIO()
    assert run_self_test(model_dir=tmp_path / "nowhere", out=out) != 0
    report = json.loads(out.getvalue())
    assert report["ok"] is False and report["failed_step"] == "load_model"
    assert "missing at" in report["error"] and "nowhere" in report["error"]
    assert "self-test failed" in capsys.readouterr().err


def test_self_test_reports_a_broken_model(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    (broken / "model.keras").write_bytes(b"")
    out = io.StringIO()
    assert run_self_test(model_dir=broken, out=out) == 1
    report = json.loads(out.getvalue())
    assert report["failed_step"] == "load_model" and "format" in report["error"]


def _run_main(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--self-test"],
        cwd=ROOT.parent,  # resources are found relative to the code, not the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_samples
@pytest.mark.slow
def test_main_self_test_from_source(tiny_model):
    """The real entry point in a fresh interpreter (the bundled model when present, else the tiny one)."""
    bundled = bundled_model_dir().exists()
    proc = _run_main({MODEL_DIR_ENV: "" if bundled else str(tiny_model)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["model"]["dir"] == str(bundled_model_dir() if bundled else tiny_model)
