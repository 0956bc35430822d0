"""Training skips images no model should learn from, with a reason per file (issue 17)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.preprocess import PreprocessConfig  # noqa: E402
from tests.bad_inputs import make_bad_inputs  # noqa: E402
from training.datasets import MIN_TRAINING_SIDE, Sample, load_arrays  # noqa: E402


def _png(path: Path, pixels: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_nan_blank_and_tiny_images_are_skipped_and_listed(tmp_path):
    rng = np.random.default_rng(0)
    good = [_png(tmp_path / f"good{i}.png", rng.integers(0, 256, (64, 64), dtype=np.uint8)) for i in range(2)]
    tiny = _png(tmp_path / "tiny.png", np.array([[7]], np.uint8))  # 1 x 1
    small = _png(tmp_path / "small.png", rng.integers(0, 256, (MIN_TRAINING_SIDE - 1, 80), dtype=np.uint8))
    bad = make_bad_inputs(tmp_path / "bad")
    nan, blank = bad["nan_pixels"], bad["blank_png"]
    samples = [Sample(p, "A") for p in [good[0], tiny, nan, small, blank, good[1]]]
    x, kept, skipped = load_arrays(samples, PreprocessConfig(size=32), workers=2)
    assert [s.path for s in kept] == good and x.shape == (2, 32, 32)
    reasons = dict(skipped)
    assert set(reasons) == {str(tiny), str(nan), str(small), str(blank)}
    assert "blank" in reasons[str(tiny)]  # one pixel is one value
    assert "not numbers" in reasons[str(nan)]
    assert "too small to train on" in reasons[str(small)] and f"{MIN_TRAINING_SIDE - 1}" in reasons[str(small)]
    assert "blank" in reasons[str(blank)]
