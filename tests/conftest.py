"""Shared test set-up. Qt runs offscreen so the suite works on machines without a display."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Viewer fixtures (the viewer engineer's block)


@pytest.fixture
def viewer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings and user models in a temporary folder: tests never touch a user's files."""
    home = tmp_path / "viewer-home"
    home.mkdir()
    monkeypatch.setenv("CXR_VIEWER_SETTINGS", str(home / "settings.ini"))
    monkeypatch.setenv("CXR_VIEWER_HOME", str(home / "data"))
    return home


def write_png(path: Path, pixels: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def gradient_image(size: int = 48, bright: int = 200, dtype: type = np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    img = (x + y) * (bright / (2.0 * size - 2))
    return img.astype(dtype)


@pytest.fixture
def image_files(tmp_path: Path) -> dict[str, Path]:
    """A few small real image files: 8-bit PNGs of different brightness and a 16-bit PNG."""
    folder = tmp_path / "images"
    deep = (gradient_image(64, 1.0, np.float64) * 4000).astype(np.uint16)
    files = {
        "dark": write_png(folder / "dark.png", gradient_image(48, 60)),
        "bright": write_png(folder / "bright.png", gradient_image(48, 250)),
        "deep": write_png(folder / "sub" / "deep16.png", deep),
    }
    return files


class FakePredictor:
    """Stands in for ``inference.predictor.Predictor`` without TensorFlow.

    Probabilities follow the mean brightness (bright images are "Pneumonia", dark ones
    "COVID-19"), so tests can check that the right result lands on the right image.
    ``delay`` makes every call slow, to prove the interface keeps running meanwhile.
    """

    def __init__(self, path: str, classes=("COVID-19", "Normal", "Pneumonia"), delay: float = 0.0, name="fake"):
        from inference.bundle import BundleInfo
        from inference.preprocess import PreprocessConfig

        if "missing" in str(path):
            raise FileNotFoundError(f"Model folder not found: {path}")
        self.path = path
        self.delay = delay
        self.device = "CPU"
        self.info = BundleInfo(
            name=name,
            version="1.0.0",
            architecture="fake",
            class_names=list(classes),
            preprocessing=PreprocessConfig(size=32),
            gradcam_layer="last_conv",
        )
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.busy = threading.Event()  # set while a call is inside the (slow) network

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def _probs(self, image) -> np.ndarray:
        k = len(self.info.class_names)
        level = float(np.asarray(image.pixels, np.float64).mean()) / max(float(np.asarray(image.pixels).max()), 1.0)
        logits = np.array([-((level - i / max(k - 1, 1)) ** 2) * 20 for i in range(k)])
        p = np.exp(logits - logits.max())
        return (p / p.sum()).astype(np.float32)

    def predict(self, image):
        self.calls.append("predict")
        return self._predict(image)

    def _predict(self, image):
        from inference.predictor import Prediction
        from inference.preprocess import Geometry

        self.threads.add(threading.current_thread().name)
        if self.delay:
            self.busy.set()
            time.sleep(self.delay)
            self.busy.clear()
        probs = self._probs(image)
        idx = int(np.argmax(probs))
        h, w = image.shape
        return Prediction(
            probabilities={n: float(p) for n, p in zip(self.info.class_names, probs)},
            probs=probs,
            label=self.info.class_names[idx],
            class_index=idx,
            model_name=self.info.name,
            model_version=self.info.version,
            device=self.device,
            geometry=Geometry(original_shape=(h, w), crop_box=(0, 0, w, h), size=32),
        )

    def predict_and_explain(self, image, class_index=None, method="gradcam"):
        """One call, as the real predictor does it (one forward and one backward pass)."""
        self.calls.append(f"predict_and_explain:{class_index}:{method}")
        prediction = self._predict(image)
        return prediction, self._explain(image, class_index, method)

    def explain(self, image, class_index=None, method="gradcam"):
        self.calls.append(f"explain:{class_index}:{method}")
        return self._explain(image, class_index, method)

    def _explain(self, image, class_index, method):
        from inference.predictor import Explanation
        from inference.preprocess import Geometry

        if self.delay:
            time.sleep(self.delay)
        if class_index is None:
            class_index = int(np.argmax(self._probs(image)))
        cam = np.zeros((4, 4), np.float32)
        cam[class_index % 4, class_index % 4] = 1.0  # each class looks somewhere else
        h, w = image.shape
        return Explanation(
            cam=cam,
            heatmap_model=cam,
            class_index=class_index,
            class_name=self.info.class_names[class_index],
            method=method,
            geometry=Geometry(original_shape=(h, w), crop_box=(0, 0, w, h), size=32),
        )


@pytest.fixture
def fake_factory():
    """A predictor factory that records the predictors it made; ``.delay`` slows them down."""

    class Factory:
        delay = 0.0

        def __init__(self) -> None:
            self.made: list[FakePredictor] = []

        def __call__(self, path: str) -> FakePredictor:
            name = Path(path).name or "fake"
            predictor = FakePredictor(path, delay=self.delay, name=name)
            self.made.append(predictor)
            return predictor

    return Factory()


@pytest.fixture
def make_window(qtbot, viewer_env, fake_factory):
    """Build a main window with the fake predictor (or another factory) and wait for its model."""
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    windows = []

    def make(model_dir: str = "fake-model", factory=None, wait_model: bool = True, **kwargs):
        window = MainWindow(
            settings=ViewerSettings(), model_dir=model_dir, predictor_factory=factory or fake_factory, **kwargs
        )
        qtbot.addWidget(window)
        if window.settings.geometry() is None:
            window.resize(1200, 800)
        window.show()
        window.start_background()
        if wait_model:
            qtbot.waitUntil(lambda: window.session.model.state in ("ready", "failed"), timeout=10000)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    """One tiny real Keras bundle for the few viewer tests that run TensorFlow."""
    from tests.tiny_bundle import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("viewer-bundle") / "tiny-model", size=32)
