"""The results panel's lung check: heat inside the lungs, and the no-lungs warning."""

from __future__ import annotations

import numpy as np

from inference.predictor import Explanation, Prediction
from inference.preprocess import Geometry
from viewer.results_panel import ResultsPanel

GEOMETRY = Geometry(original_shape=(40, 40), crop_box=(0, 0, 40, 40), size=32)
CLASSES = ("COVID-19", "Normal", "Pneumonia")


def _prediction(warning: str | None = None) -> Prediction:
    probs = np.array([0.1, 0.7, 0.2], np.float32)
    return Prediction(
        probabilities=dict(zip(CLASSES, probs.tolist())),
        probs=probs,
        label="Normal",
        class_index=1,
        model_name="m",
        model_version="1",
        device="CPU",
        geometry=GEOMETRY,
        lung_warning=warning,
    )


def _explanation(fraction: float | None, warning: str | None = None) -> Explanation:
    cam = np.ones((4, 4), np.float32)
    return Explanation(cam, cam, 1, "Normal", "gradcam", GEOMETRY, lung_heat_fraction=fraction, lung_warning=warning)


def test_heat_in_lungs_is_shown_once_a_heat_map_is(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_classes(CLASSES)
    panel.show_prediction(_prediction())
    assert panel.lungs_label.isHidden()
    panel.show_lung_heat(_explanation(0.834))
    assert not panel.lungs_label.isHidden()
    assert "83% of the Grad-CAM heat lies inside the lung fields" in panel.lungs_label.text()
    panel.show_state("Analysing…")  # another image: the figure must not linger
    assert panel.lungs_label.isHidden()


def test_no_plausible_lungs_warning_wins_over_the_heat_figure(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_classes(CLASSES)
    warning = "No plausible lung fields found: this may not be a frontal chest X-ray. (area 2%)"
    panel.show_prediction(_prediction(warning))
    assert not panel.lungs_label.isHidden() and warning in panel.lungs_label.text()
    panel.show_lung_heat(_explanation(None, warning))
    assert warning in panel.lungs_label.text()
    panel.show_prediction(_prediction())
    panel.show_lung_heat(_explanation(None))
    assert panel.lungs_label.isHidden()
