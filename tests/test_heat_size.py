"""Heat maps at the size the canvas draws the film (issue 12), rebuilt after a large zoom, never flooding the worker."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from inference.preprocess import Geometry
from tests.conftest import write_png
from viewer.render import HEAT_MAX_SIDE, HEAT_MIN_SIDE, display_heat, heat_side_for, heat_side_is_stale


def test_the_heat_side_follows_the_drawn_size_within_bounds():
    assert heat_side_for(300, 3000) == 320  # rounded up to a multiple of 64
    assert heat_side_for(10, 3000) == HEAT_MIN_SIDE
    assert heat_side_for(9000, 3000) == HEAT_MAX_SIDE  # zoomed in: a smooth map gains nothing larger
    assert heat_side_for(9000, 1000) == 1000  # never above the film's own size
    assert heat_side_for(0, 60) == 60


def test_only_a_large_change_makes_a_map_stale():
    assert not heat_side_is_stale(512, 700)
    assert heat_side_is_stale(512, 800)
    assert heat_side_is_stale(512, 320)
    assert not heat_side_is_stale(512, 512)


def test_display_heat_has_the_asked_side_and_the_film_s_shape():
    explanation = SimpleNamespace(
        geometry=Geometry(original_shape=(3000, 2400), crop_box=(300, 200, 2100, 2800), size=224),
        cam=np.random.default_rng(0).random((7, 7)).astype(np.float32),
    )
    heat = display_heat(explanation, 640)
    assert heat.shape == (640, 512) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def _textured(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(3)
    return np.clip(40 + 150 * (x + y) / (h + w) + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8)


@pytest.fixture
def big_film(tmp_path):
    return write_png(tmp_path / "films" / "big.png", _textured(1200, 1000))


def test_the_overlay_is_built_at_the_drawn_size_and_rebuilt_once_after_a_burst_of_zooms(make_window, qtbot, big_film):
    from viewer.analysis import canvas_shown_side

    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(big_film)])
    qtbot.waitUntil(lambda: window.session.current is not None and window.session.current.prediction is not None)
    canvas, session, controller = window.canvas, window.session, window.controller
    with qtbot.waitSignal(window.overlay_shown, timeout=10000):
        session.set_overlay_visible(True)
    first = session.overlay_heat.heat
    fitted = heat_side_for(canvas_shown_side(canvas), 1200)
    assert max(first.shape) == fitted < 1200  # the fitted film is drawn smaller than its pixels
    assert first.shape[0] * 1000 == pytest.approx(first.shape[1] * 1200, rel=0.02)  # the film's proportions

    calls = []
    render = controller.render_heat
    controller.render_heat = lambda *args: calls.append(args[2]) or render(*args)
    with qtbot.waitSignal(window.overlay_shown, timeout=10000):
        for zoom in (0.8, 1.2, 1.6, 2.0, 3.0):  # a burst of wheel steps: one rebuild when it settles
            canvas.set_zoom(zoom)
    assert calls == [1200]  # one job, at the film's own size (drawn 3x larger: never above its pixels)
    assert max(session.overlay_heat.heat.shape) == 1200
    assert session.overlay_heat.explanation is session.current.explanations[session.overlay_heat.target]

    # A small change asks for nothing; one job at a time per film however often the view changes.
    canvas.set_zoom(2.8)
    qtbot.wait(400)
    assert calls == [1200]
    canvas.fit()
    window.scheduler.refresh_heat_size()
    window.scheduler.refresh_heat_size()
    assert calls == [1200, fitted]
    qtbot.waitUntil(lambda: max(session.overlay_heat.heat.shape) == fitted, timeout=10000)


def test_a_map_rebuilt_for_a_result_that_is_gone_is_not_shown(make_window, qtbot, big_film):
    """A model switch clears the results while a heat job of the old explanation may still run."""
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(big_film)])
    qtbot.waitUntil(lambda: window.session.current is not None and window.session.current.prediction is not None)
    session, scheduler = window.session, window.scheduler
    with qtbot.waitSignal(window.overlay_shown, timeout=10000):
        session.set_overlay_visible(True)
    old = session.overlay_heat
    doc = session.current
    doc.explanations.clear()  # what a model switch does to the results and the overlay
    session.set_overlay_heat(None)
    with qtbot.waitSignal(window.overlay_shown, timeout=10000):  # the overlay is computed again
        scheduler._render_heat(doc, old.target, old.explanation)
    assert session.overlay_heat.explanation is not old.explanation
    assert session.overlay_heat.explanation is doc.explanations[old.target]
