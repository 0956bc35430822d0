"""Issue 17, "small defects seen in use": what the viewer shows must match what it holds."""

from __future__ import annotations

import shutil

from viewer.opening import open_summary


def _open(window, qtbot, *paths) -> None:
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in paths])


def test_file_open_while_films_are_open_shows_the_new_film(make_window, qtbot, image_files):
    window = make_window()
    _open(window, qtbot, image_files["dark"], image_files["deep"])
    assert window.session.current.name == "dark.png"
    _open(window, qtbot, image_files["bright"])
    assert [d.name for d in window.session.documents()] == ["dark.png", "deep16.png", "bright.png"]
    assert window.session.current.name == "bright.png"  # shown, not only appended
    assert window.canvas_presenter._shown is window.session.current


def test_the_same_film_by_two_paths_is_open_once(make_window, qtbot, image_files, tmp_path):
    window = make_window()
    copy = tmp_path / "elsewhere" / "copy-of-dark.png"
    copy.parent.mkdir()
    shutil.copyfile(image_files["dark"], copy)
    _open(window, qtbot, image_files["dark"], image_files["bright"])
    window.session.set_current(window.session.documents()[1].doc_id)
    _open(window, qtbot, copy)
    docs = window.session.documents()
    assert [d.name for d in docs] == ["dark.png", "bright.png"]
    assert window.session.current is docs[0]  # the film already open is shown
    assert "copy-of-dark.png is already open" in window.statusBar().currentMessage()
    # In one request too: a folder holding a film and its copy gives one document.
    window.close_all()
    _open(window, qtbot, image_files["dark"], copy)
    assert [d.name for d in window.session.documents()] == ["dark.png"]


def test_open_summary_counts_films_already_open():
    assert open_summary(1, 0, [], ["a.png"]) == "a.png is already open (shown)"
    assert open_summary(3, 0, [], ["a.png"]) == "Opened 2 images; a.png is already open"
    assert open_summary(4, 0, [], ["a.png", "b.png"]) == "Opened 2 images; 2 already open"
    assert open_summary(2, 0, []) == "Opened 2 images"
