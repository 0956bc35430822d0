"""Background threads seen from the window: a responsive interface, the loader, model switching.

The analysis controller itself (handles, cancel, model switches, quitting) is tested in
``tests/test_controller.py``.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer

from viewer.workers import ImageLoader


def test_window_stays_responsive_while_predicting(make_window, qtbot, image_files, fake_factory):
    fake_factory.delay = 0.3
    window = make_window()
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: fake_factory.made[-1].busy.is_set() and ticks.append(1))
    timer.start()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in image_files.values()])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    timer.stop()
    assert len(ticks) >= 2  # the loop ticked while the predictor was busy (three 0.3 s predictions)
    # Meanwhile the interface reacted: the first image was on screen before its prediction came.
    assert window.results.headline.text() == window.session.current.prediction.label


def test_image_loader_reports_each_file(qtbot, tmp_path, image_files):
    from tests.bad_inputs import make_bad_inputs

    bad = make_bad_inputs(tmp_path / "bad")
    loader = ImageLoader(name="test-loader")
    loader.start()
    loaded, failed = [], []
    loader.loaded.connect(lambda r, p, img, prep: loaded.append((p, prep.thumbnail.dtype, max(prep.thumbnail.shape))))
    loader.failed.connect(lambda r, p, msg: failed.append(msg))
    try:
        with qtbot.waitSignal(loader.batch_finished, timeout=10000) as done:
            loader.load_paths(1, [str(image_files["dark"].parent), str(bad["empty"])])
        assert done.args == [1, 3, 1]
        assert all(dtype == np.uint8 and side <= 160 for _, dtype, side in loaded)
        assert "empty" in failed[0].lower()
    finally:
        assert loader.stop(timeout=30)


def test_a_reload_goes_before_the_files_still_waiting(qtbot, image_files, tmp_path):
    import shutil

    order: list[tuple[int, str]] = []
    loader = ImageLoader(name="test-loader")
    loader.loaded.connect(lambda r, p, img, prep: order.append((r, p)))
    many = [str(shutil.copy(image_files["dark"], tmp_path / f"copy{i}.png")) for i in range(5)]
    loader.load_paths(1, many)
    loader._tasks.get()()  # expand the request here: five files waiting, the thread not started yet
    loader.reload(str(image_files["bright"]))
    loader.start()
    try:
        qtbot.waitUntil(lambda: len(order) == 6, timeout=10000)
    finally:
        assert loader.stop(timeout=30)
    assert order[0] == (ImageLoader.RELOAD, str(image_files["bright"]))


def test_model_switch_refreshes_predictions(make_window, qtbot, image_files, fake_factory):
    window = make_window(model_dir="first")
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(image_files["dark"]), str(image_files["bright"])])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    assert all(d.prediction.model_name == "first" for d in window.session.documents())
    with qtbot.waitSignal(window.model_changed, timeout=10000):
        window.activate_model("second")
    qtbot.waitUntil(
        lambda: all(
            d.prediction is not None and d.prediction.model_name == "second" for d in window.session.documents()
        ),
        timeout=10000,
    )
    assert "second 1.0.0" in window.model_label.text()
    assert window.settings.active_model == "second"
    assert len(fake_factory.made) == 2
