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


def test_a_vertical_flip_is_described_as_one(make_window, qtbot, image_files):
    from viewer.presenters import describe_orientation

    window = make_window()
    _open(window, qtbot, image_files["dark"])
    canvas = window.canvas
    window.actions_by_id["flip_v"].trigger()
    window.status_presenter.annotate()
    corner = canvas._annotations["bottom_left"]
    assert "flipped vertically" in corner and not any("mirrored" in line or "180" in line for line in corner)
    window.actions_by_id["flip_v"].trigger()
    window.actions_by_id["flip_h"].trigger()
    window.status_presenter.annotate()
    assert "flipped horizontally" in canvas._annotations["bottom_left"]
    window.actions_by_id["flip_v"].trigger()  # both flips: a half turn, said as such
    window.status_presenter.annotate()
    assert "rotated 180°" in canvas._annotations["bottom_left"]
    assert describe_orientation(((0, -1), (-1, 0))) == "flipped horizontally, rotated 90°"
    assert describe_orientation(((1, 0), (0, 1))) == ""


def test_grad_cam_plus_plus_is_called_so_everywhere(make_window, qtbot, image_files):
    window = make_window()
    _open(window, qtbot, image_files["bright"])
    qtbot.waitUntil(lambda: window.session.current.prediction is not None, timeout=10000)
    window.session.set_overlay_method("gradcam++")
    with qtbot.waitSignal(window.overlay_shown, timeout=10000):
        window.session.set_overlay_visible(True)
    heat = window.session.overlay_heat
    assert heat.explanation.method == "gradcam++"
    name = heat.explanation.class_name
    assert window.overlay_panel.status.text() == f"Grad-CAM++ for {name}"
    window.status_presenter.annotate()
    assert f"Grad-CAM++: {name}" in window.canvas._annotations["top_right"]
    assert not any(line.startswith("Grad-CAM:") for line in window.canvas._annotations["top_right"])
