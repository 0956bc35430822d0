"""predict_paths decodes ahead of the model within a byte budget, not only a file count (issue 17)."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.image import ImageMeta, XRayImage  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402

SIDE = 1000  # 1000 x 1000 uint16: 2 MB per decoded file
FILE_BYTES = SIDE * SIDE * 2


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from inference.predictor import Predictor

    return Predictor(make_tiny_bundle(tmp_path_factory.mktemp("ahead") / "bundle", size=32), lungs=None)


class _FakeLoader:
    """Returns a big image per path and records how many bytes of them are alive at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alive = 0
        self.peak = 0
        self.loaded: list[str] = []

    def _freed(self, nbytes: int) -> None:
        with self.lock:
            self.alive -= nbytes

    def __call__(self, path) -> XRayImage:
        seed = int(Path(path).stem)
        pixels = np.full((SIDE, SIDE), seed, np.uint16)
        pixels[0, 0] = 65535  # not blank
        with self.lock:
            self.alive += pixels.nbytes
            self.peak = max(self.peak, self.alive)
            self.loaded.append(str(path))
        weakref.finalize(pixels, self._freed, pixels.nbytes)
        meta = ImageMeta(path=str(path), format="PNG", width=SIDE, height=SIDE, bits_stored=16)
        return XRayImage(pixels=pixels, meta=meta)


@pytest.mark.parametrize("keep_images", [False, True])
def test_decoded_bytes_ahead_of_the_model_stay_within_the_budget(predictor, monkeypatch, keep_images):
    import inference.loading

    fake = _FakeLoader()
    monkeypatch.setattr(inference.loading, "load_image", fake)
    paths = [f"{i}.png" for i in range(40)]
    budget = 5 * FILE_BYTES
    workers = 2
    results = []
    for result in predictor.predict_paths(
        paths, batch_size=16, workers=workers, keep_images=keep_images, max_bytes_ahead=budget
    ):
        assert result.ok, result.error
        results.append(result.file)
        if keep_images:
            result.image = None  # a caller that keeps images holds them itself; release ours
    assert results == paths  # every file, in input order
    # Without the byte budget 2 x 16 + 2 files (68 MB) were decoded ahead; now at most the
    # budget, the files being decoded and one that finished as the budget filled.
    assert fake.peak <= budget + (workers + 2) * FILE_BYTES, fake.peak / FILE_BYTES


def test_a_file_larger_than_the_budget_still_goes_through(predictor, monkeypatch):
    import inference.loading

    monkeypatch.setattr(inference.loading, "load_image", _FakeLoader())
    paths = [f"{i}.png" for i in range(5)]
    results = list(predictor.predict_paths(paths, batch_size=4, workers=2, max_bytes_ahead=1))
    assert [r.file for r in results] == paths and all(r.ok for r in results)
