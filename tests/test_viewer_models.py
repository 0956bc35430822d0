"""Installed models: the store, the model manager dialog, and the viewer on a real (tiny) Keras model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from inference.bundle import BundleError
from viewer import model_store
from viewer.model_card import model_card_html


@pytest.fixture
def models_env(viewer_env, tiny_bundle_dir, tmp_path, monkeypatch):
    """A bundled model (a copy of the tiny bundle) and an empty user models folder."""
    bundled = tmp_path / "resources" / "models" / "default"
    shutil.copytree(tiny_bundle_dir, bundled)
    monkeypatch.setattr(model_store, "bundled_model_dir", lambda: bundled)
    monkeypatch.setattr("inference.paths.bundled_model_dir", lambda: bundled)
    return bundled


def _variant(tiny_bundle_dir: Path, folder: Path, description: str) -> Path:
    """A copy of the tiny bundle that differs only in its description (another model to the store)."""
    shutil.copytree(tiny_bundle_dir, folder)
    data = json.loads((folder / "model.json").read_text())
    data["description"] = description
    (folder / "model.json").write_text(json.dumps(data))
    return folder


def test_store_lists_imports_and_deletes(models_env, tiny_bundle_dir, tmp_path):
    entries = model_store.list_models()
    assert [e.bundled for e in entries] == [True]
    first = model_store.import_bundle(_variant(tiny_bundle_dir, tmp_path / "a", "variant a"))
    second = model_store.import_bundle(_variant(tiny_bundle_dir, tmp_path / "b", "variant b"))  # a second folder
    assert first != second and first.parent == second.parent == model_store.user_models_dir()
    assert (first / "model.keras").is_file() and (second / "model.json").is_file()
    labels = [e.label for e in model_store.list_models()]
    assert labels == ["tiny-test 0.0.1 (bundled)", "tiny-test 0.0.1", "tiny-test 0.0.1"]
    model_store.delete_user_model(first)
    assert not first.exists() and second.exists()
    with pytest.raises(ValueError):
        model_store.delete_user_model(models_env)  # the bundled model is not the user's to delete
    assert models_env.exists()


def test_import_refuses_a_folder_that_is_not_a_bundle(models_env, tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "model.json").write_text(json.dumps({"format": "something else"}))
    (bad / "model.keras").write_bytes(b"zip?")
    with pytest.raises(BundleError):
        model_store.import_bundle(bad)
    assert not model_store.user_models_dir().exists() or not any(model_store.user_models_dir().iterdir())


def test_model_card_shows_classes_data_and_metrics(tiny_bundle_dir):
    from inference.bundle import read_bundle_info

    info = read_bundle_info(tiny_bundle_dir)
    info.training = {"data": {"counts": {"train": {"COVID-19": 5, "Normal": 6, "Pneumonia": 7}}, "n_images": 18}}
    info.metrics = {
        "val": {
            "accuracy": 0.75,
            "macro_f1": 0.7,
            "n_images": 4,
            "per_class": {"Normal": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}},
            "confusion_matrix": {"classes": ["Normal", "Pneumonia"], "matrix": [[1, 1], [0, 2]]},
        }
    }
    html = model_card_html(info, str(tiny_bundle_dir), bundled=True, active=True)
    for text in ("tiny-test 0.0.1", "COVID-19, Normal, Pneumonia", "Validation split", "0.750", "Confusion matrix",
                 "bundled", "active", "Research use only"):  # fmt: skip
        assert text in html


def test_model_manager_switches_imports_and_deletes(
    make_window, qtbot, models_env, tiny_bundle_dir, image_files, tmp_path
):
    from viewer.model_manager import ModelManagerDialog

    window = make_window(model_dir=str(models_env))
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(image_files["dark"])])
    qtbot.waitUntil(
        lambda: window.session.current is not None and window.session.current.prediction is not None, timeout=10000
    )
    assert window.session.current.prediction.model_name == "default"  # the fake predictor names itself after the folder

    dialog = ModelManagerDialog(window.session, window.activate_model, window)
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 1
    assert dialog.list.item(0).text().startswith("●")  # the active one is marked
    assert not dialog.delete_button.isEnabled()  # the bundled model cannot be deleted
    assert "tiny-test 0.0.1" in dialog.card.toPlainText()

    imported = dialog.import_folder(str(_variant(tiny_bundle_dir, tmp_path / "variant", "another model")))
    assert imported is not None and imported.is_dir()
    assert dialog.list.count() == 2 and dialog.selected().path == imported
    assert dialog.delete_button.isEnabled()
    # Not a bundle: a clear note, nothing imported.
    assert dialog.import_folder(str(image_files["dark"].parent)) is None
    assert "Not imported" in dialog.note.text()

    with qtbot.waitSignal(window.model_changed, timeout=10000):
        dialog.activate_selected()
    assert window.session.model.path == str(imported)
    assert window.settings.active_model == str(imported)
    qtbot.waitUntil(lambda: window.session.current.prediction is not None, timeout=10000)
    assert window.session.current.prediction.model_name == imported.name  # predictions refreshed by the new model

    # Delete asks first; "no" keeps the model.
    dialog.confirm_delete = lambda entry: False
    assert not dialog.delete_selected() and imported.exists()
    dialog.confirm_delete = lambda entry: True
    with qtbot.waitSignal(window.model_changed, timeout=10000):
        assert dialog.delete_selected()
    assert not imported.exists()
    assert window.session.model.path == str(models_env)  # deleting the active model falls back to the bundled one
    assert dialog.list.count() == 1


def test_model_opened_from_elsewhere_is_listed_but_not_deletable(make_window, qtbot, models_env, tiny_bundle_dir):
    from viewer.model_manager import ModelManagerDialog

    window = make_window(model_dir=str(tiny_bundle_dir))  # like ``main.py --model DIR``
    dialog = ModelManagerDialog(window.session, window.activate_model, window)
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 2  # the active one from elsewhere, then the bundled one
    assert dialog.selected().path == tiny_bundle_dir
    assert "(from " in dialog.list.item(0).text() and dialog.list.item(0).text().startswith("●")
    assert not dialog.delete_button.isEnabled()
    dialog.confirm_delete = lambda entry: True
    assert not dialog.delete_selected() and tiny_bundle_dir.exists()


@pytest.mark.slow
def test_viewer_with_a_real_keras_model(make_window, qtbot, tiny_bundle_dir, image_files):
    """The real Predictor in the inference thread: prediction, results panel and Grad-CAM overlay."""
    from inference.predictor import Predictor

    # Without the lung model: the synthetic film has no lungs, and the gate would (rightly) abstain.
    window = make_window(model_dir=str(tiny_bundle_dir), factory=lambda path: Predictor(path, lungs=None))
    assert window.session.model.state == "ready", window.messages.messages()
    assert window.model_label.text().startswith("Model: tiny-test 0.0.1 · ")
    with qtbot.waitSignal(window.open_finished, timeout=20000):
        window.open_paths([str(image_files["deep"])])
    qtbot.waitUntil(
        lambda: window.session.current is not None and window.session.current.prediction is not None, timeout=60000
    )
    prediction = window.session.current.prediction
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert window.results.headline.text() == prediction.label
    with qtbot.waitSignal(window.overlay_shown, timeout=60000):
        qtbot.keyClick(window.canvas, Qt.Key.Key_G)
    explanation = window.session.current.explanations[(prediction.class_index, "gradcam")]
    assert explanation.heatmap_original.shape == window.session.current.image.shape
    assert window.canvas.has_overlay()
    assert window.canvas.overlay_item.sceneBoundingRect() == window.canvas.image_item.sceneBoundingRect()
    assert Path(window.session.model.path) == tiny_bundle_dir


def test_model_card_shows_lung_crop_held_out_sources_and_per_source_accuracy(tiny_bundle_dir):
    import dataclasses

    from inference.bundle import read_bundle_info

    info = read_bundle_info(tiny_bundle_dir)
    info.preprocessing = dataclasses.replace(info.preprocessing, crop="lungs", crop_margin=0.08, clahe=True)
    info.training = {"config": {"val_sources": ["north"]}}
    info.metrics = {
        "val": {
            "accuracy": 0.8,
            "n_images": 10,
            "by_source": {"north": {"n_images": 4, "accuracy": 0.5, "macro_f1": 0.4}},
        }
    }
    html = model_card_html(info, str(tiny_bundle_dir))
    for text in ("crop to the lung fields (+8% margin)", "CLAHE", "north (validated on, never trained on)",
                 "Per source", "0.500"):  # fmt: skip
        assert text in html


def test_model_card_lists_images_per_source_as_a_table(tiny_bundle_dir):
    from inference.bundle import read_bundle_info

    info = read_bundle_info(tiny_bundle_dir)
    info.training = {"data": {"sources": {"north": {"train": 12, "val": 3}, "south": {"train": 7, "test": 5}}}}
    html = model_card_html(info, str(tiny_bundle_dir))
    assert "<th>Source</th><th>train</th><th>val</th><th>test</th>" in html
    assert "<tr><td>south</td><td align='right'>7</td><td align='right'>0</td><td align='right'>5</td></tr>" in html
    assert "{'train'" not in html  # no Python dict text in the card


def test_model_manager_opens_with_hostile_models_and_shows_errors_as_text(
    make_window, qtbot, models_env, tiny_bundle_dir, tmp_path
):
    """A broken model in the models folder stopped the model manager from opening (issue 17);
    its error quotes model.json, so it is shown as plain text, never as markup."""
    from tests.tiny_bundle import edited_bundle
    from viewer.model_manager import ModelManagerDialog

    root = model_store.user_models_dir()
    root.mkdir(parents=True)
    edited_bundle(tiny_bundle_dir, root / "deep", lambda d: "[" * 100_000 + "]" * 100_000)
    edited_bundle(tiny_bundle_dir, root / "tiles", lambda d: d["preprocessing"].update(clahe_tiles=0))
    edited_bundle(tiny_bundle_dir, root / "markup", lambda d: d.update(class_names=["A", "<img src=x><b>99%</b>"]))
    window = make_window()
    dialog = ModelManagerDialog(window.session, window.activate_model, window)
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 4  # the bundled model and the three broken ones, each with its error
    dialog.select_path(root / "markup")
    assert "<img src=x>" in dialog.card.toPlainText()  # shown as text: the markup did not render
    dialog.import_folder(str(root / "tiles"))
    assert "clahe_tiles" in dialog.note.text() and dialog.note.textFormat() == Qt.TextFormat.PlainText


def _adapted_variant(tiny_bundle_dir: Path, folder: Path) -> Path:
    """A copy of the tiny bundle that says it was adapted from tiny-test 0.0.1 on 40 local films."""
    shutil.copytree(tiny_bundle_dir, folder)
    data = json.loads((folder / "model.json").read_text())
    data["version"] = "0.0.1-adapted.1"
    comparison = {
        "parent": {"n": 10, "accuracy": 0.5, "balanced_accuracy": 0.5, "recall": {"Normal": 0.4}, "ece": 0.1},
        "child": {"n": 10, "accuracy": 0.8, "balanced_accuracy": 0.8, "recall": {"Normal": 0.9}, "ece": 0.05},
    }
    data["training"] = {
        "adaptation": {
            "parent": {"name": "tiny-test", "version": "0.0.1", "content_hash": "sha256:abc"},
            "local_films": 40,
            "check_films": 10,
            "date": "2026-12-01T18:00:00+00:00",
            "gate": {"accepted": True, "reasons": ["Local check set (10 films): better <b>beyond</b>"]},
            "comparison": {"check": comparison},
        }
    }
    (folder / "model.json").write_text(json.dumps(data))
    return folder


def test_activation_keeps_the_predecessor_and_roll_back_restores_it(
    make_window, qtbot, models_env, tiny_bundle_dir, tmp_path
):
    from viewer.model_manager import ModelManagerDialog

    window = make_window(model_dir=str(models_env))
    dialog = ModelManagerDialog(window.session, window.activate_model, window)
    qtbot.addWidget(dialog)
    assert not dialog.rollback_button.isEnabled()  # nothing activated before: nothing to go back to
    imported = dialog.import_folder(str(_adapted_variant(tiny_bundle_dir, tmp_path / "adapted")))
    assert imported is not None
    card = dialog.card.toPlainText()
    assert "Fine-tuned from" in card and "tiny-test 0.0.1" in card and "40 (10 held out to check)" in card
    assert "<b>beyond</b>" in card  # the model's own text is shown as text, never as markup
    assert "Parent" in card and "Adapted" in card and "0.800" in card

    with qtbot.waitSignal(window.model_changed, timeout=10000):
        dialog.activate_selected()
    assert window.session.model.path == str(imported)
    assert dialog.rollback_button.isEnabled()
    with qtbot.waitSignal(window.model_changed, timeout=10000):
        assert dialog.roll_back() == models_env
    assert window.session.model.path == str(models_env)
    assert not dialog.rollback_button.isEnabled()  # one step taken back; no further predecessor
    from training.adapt_cli import default_parent

    assert default_parent() == models_env  # what `main.py adapt` starts from by default
    assert window.settings.active_model == ""  # the viewer's next start: the bundled model, one record


def test_the_viewer_and_adapt_share_one_record_of_the_active_model(models_env, tiny_bundle_dir, tmp_path):
    """The model the viewer starts with is the one `main.py adapt` adapts by default: one record."""
    from inference.activations import record_activation, roll_back
    from training.adapt_cli import default_parent
    from viewer.settings import ViewerSettings

    other = _variant(tiny_bundle_dir, tmp_path / "other", "another model")
    settings = ViewerSettings()
    settings.active_model = str(other)
    assert default_parent() == other
    record_activation(models_env, other)  # the model manager activates the bundled one
    assert settings.active_model == str(models_env)
    assert roll_back(models_env) == other  # rolled back outside the viewer: its next start follows
    assert ViewerSettings().active_model == str(other)
