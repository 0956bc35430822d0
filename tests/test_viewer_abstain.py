"""Issue 13 in the viewer: a film the model abstained on shows "No AI result" everywhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inference.predictor import NO_AI_RESULT, Prediction
from inference.preprocess import Geometry
from tests.conftest import FakePredictor
from viewer.results_panel import ResultsPanel

CLASSES = ("COVID-19", "Normal", "Pneumonia")
REASON = (
    "The film looks unlike the chest X-rays the model was trained on (out-of-distribution score 0.97 "
    "above the 0.80 limit), so its class would not be meaningful; read it without AI support."
)


def abstained_prediction(reason: str = REASON) -> Prediction:
    probs = np.array([0.1, 0.2, 0.7], np.float32)
    return Prediction(
        probabilities=dict(zip(CLASSES, probs.tolist())),
        probs=probs,
        label="Pneumonia",
        class_index=2,
        model_name="m",
        model_version="1",
        device="CPU",
        geometry=Geometry(original_shape=(40, 40), crop_box=(0, 0, 40, 40), size=32),
        abstain_reason=reason,
    )


class AbstainingPredictor(FakePredictor):
    """The fake predictor, abstaining on every film."""

    def _predict(self, image):
        return dataclasses.replace(super()._predict(image), abstain_reason=REASON)


def test_results_panel_says_no_ai_result_with_the_whole_reason(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(260, 400)
    panel.show()
    panel.set_classes(CLASSES)
    panel.show_prediction(abstained_prediction())
    assert panel.headline.text() == NO_AI_RESULT
    assert panel.detail.text() == REASON and panel.detail.wordWrap()  # whole, wrapped
    assert "Pneumonia" not in panel.headline.text()
    # The probabilities stay hidden until asked for, and are then drawn with no class as the answer.
    assert panel.bars.isHidden() and panel.show_probs_box.isVisible()
    with qtbot.waitSignal(panel.show_probabilities_changed) as blocker:
        panel.show_probs_box.setChecked(True)
    assert blocker.args == [True]
    assert not panel.bars.isHidden() and panel.bars._top is None
    # A film with a result: the box goes away and the bars come back.
    normal = dataclasses.replace(abstained_prediction(), abstain_reason=None)
    panel.show_prediction(normal)
    assert panel.headline.text() == "Pneumonia" and panel.show_probs_box.isHidden()
    assert not panel.bars.isHidden() and panel.bars._top == 2


def test_window_shows_no_ai_result_badge_label_and_no_overlay(make_window, qtbot, image_files):
    from viewer.settings import ViewerSettings

    made = []
    window = make_window(factory=lambda path: made.append(AbstainingPredictor(path)) or made[-1])
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(image_files["bright"])])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    doc = window.session.current
    window.thumbnails_presenter.flush()
    assert window.thumbnails.badge(doc.doc_id) == NO_AI_RESULT
    assert window.results.headline.text() == NO_AI_RESULT
    assert window.results.bars.isHidden()
    window.status_presenter.annotate()
    assert f"AI: {NO_AI_RESULT}" in window.canvas._annotations.get("top_right", [])
    # Grad-CAM is not offered as evidence of a class, and says why.
    action, box = window.actions_by_id["overlay"], window.overlay_panel.show_box
    assert not action.isEnabled() and not box.isEnabled()
    assert "No AI result" in box.toolTip() and "No AI result" in action.toolTip()
    window.session.set_overlay_visible(True)
    qtbot.wait(300)
    assert window.session.overlay_heat is None and not window.canvas.has_overlay()
    assert not any(call.startswith("predict_and_explain") for call in made[0].calls)  # not even computed
    # "Show probabilities anyway" is remembered.
    window.results.show_probs_box.setChecked(True)
    assert ViewerSettings().show_abstained_probabilities is True


@pytest.mark.parametrize("show", [False, True])
def test_show_probabilities_anyway_starts_from_the_settings(make_window, qtbot, show):
    from viewer.settings import ViewerSettings

    ViewerSettings().show_abstained_probabilities = show
    window = make_window()
    assert window.results.show_probs_box.isChecked() is show
