"""TensorFlow's libraries are mapped without the GIL before its import (issue 12: GUI stalls)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.native_preload import NativePreload, dlopen_without_gil

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_library_is_not_loaded(tmp_path):
    assert dlopen_without_gil(tmp_path / "no-such-library.so") is False


def test_a_preload_never_started_is_not_waited_for():
    preload = NativePreload()
    assert not preload.started
    assert preload.wait_gil_bound(timeout=0.0) and preload.wait(timeout=0.0)


def test_the_preload_runs_the_gil_bound_imports_first_and_says_when_they_are_over(monkeypatch):
    import inference.native_preload as native

    preload = NativePreload()
    steps = []
    monkeypatch.setattr(native, "import_gil_bound_extensions", lambda: steps.append("gil-bound"))
    monkeypatch.setattr(
        native, "preload_tensorflow_libraries", lambda: steps.append(("libraries", preload.gil_bound_done.is_set()))
    )
    preload.start()
    assert preload.wait(timeout=30.0)
    assert steps == ["gil-bound", ("libraries", True)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux only")
def test_tensorflow_imports_and_runs_after_its_libraries_were_preloaded():
    pytest.importorskip("tensorflow")
    code = (
        "import sys\n"
        "from inference.native_preload import TENSORFLOW_LIBRARIES, preload_tensorflow_libraries\n"
        "loaded = preload_tensorflow_libraries()\n"
        "assert loaded == list(TENSORFLOW_LIBRARIES), loaded\n"
        "assert 'tensorflow' not in sys.modules  # mapped, not imported\n"
        "assert preload_tensorflow_libraries() == []  # once\n"
        "import tensorflow as tf\n"
        "print(int(tf.constant(2) + 3))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "5"


def test_a_controller_with_a_test_factory_prepares_no_tensorflow():
    from viewer.controller import AnalysisController

    controller = AnalysisController(predictor_factory=lambda path: None)
    assert not controller.preload.started
