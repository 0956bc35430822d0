"""The main window: thumbnails left, image centre, AI result, Grad-CAM and tags right.

The window owns the opened images (:class:`ImageDocument`) and two background workers
(:mod:`viewer.workers`). Nothing slow runs on this thread: files are read by the loader
thread, TensorFlow is imported and the network run by the inference thread, and the
results come back as signals. Until the first paint, nothing heavy is even started
(:meth:`MainWindow.start_background`), so the window appears at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QMimeData, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from inference.image import Window, XRayImage
from viewer.canvas import ImageCanvas, PixelInfo, accept_file_drag, mime_paths
from viewer.document import ImageDocument, describe_image
from viewer.icons import icon
from viewer.messages_panel import MessagesPanel
from viewer.overlay_panel import OverlayPanel
from viewer.presets import window_presets
from viewer.qt_compat import emit
from viewer.results_panel import DISCLAIMER, ResultsPanel
from viewer.settings import ViewerSettings
from viewer.shortcuts import SHORTCUTS
from viewer.tags_panel import TagsPanel
from viewer.thumbnails import ThumbnailList
from viewer.workers import ImageLoader, InferenceWorker, Job

__all__ = ["MainWindow", "APP_TITLE"]

APP_TITLE = "CXR Viewer"
# Known colour map names, listed before matplotlib is imported; inference.overlay.COLORMAPS
# is the authority and replaces this list as soon as the inference thread has it.
_INITIAL_COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "hot")

# Toolbar: action ids (None = separator) and the icon each uses.
TOOLBAR = (
    ("open", "open"),
    ("export", "export"),
    None,
    ("fit", "fit"),
    ("zoom_in", "zoom-in"),
    ("zoom_out", "zoom-out"),
    ("rotate_left", "rotate-left"),
    ("rotate_right", "rotate-right"),
    ("flip_h", "flip-h"),
    ("flip_v", "flip-v"),
    ("invert", "invert"),
    ("reset_view", "reset"),
    None,
    ("overlay", "overlay"),
    None,
    ("models", "models"),
    ("train", "train"),
    None,
    ("help", "help"),
)
TOOLBAR_LABELS = {"overlay": "Grad-CAM", "models": "Models", "train": "Train", "open": "Open", "export": "Export"}


def _percent(p: float) -> str:
    """Probabilities as the exports write them (">99.9%", never a certain "100%")."""
    from inference.export.facts import format_probability  # warmed up by the inference thread

    return format_probability(p)


def _badge_percent(p: float) -> str:
    """Whole percent for the small thumbnail badge; the extremes keep their "<"/">" honesty."""
    pct = 100.0 * float(p)
    return ">99%" if pct >= 99.5 else "<1%" if pct < 0.5 else f"{pct:.0f}%"


def _model_dir_default(settings: ViewerSettings) -> str:
    from inference.paths import bundled_model_dir

    active = settings.active_model
    if active and Path(active).is_dir():
        return active
    return str(bundled_model_dir())


class MainWindow(QMainWindow):
    """The viewer. ``predictor_factory`` and ``load_image`` replace the real ones in tests."""

    document_opened = Signal(int)  # doc id
    document_closed = Signal(int)
    prediction_shown = Signal(int)  # doc id whose prediction just arrived
    overlay_shown = Signal(int)  # doc id whose heat map is now on the canvas
    open_finished = Signal(int, int)  # files opened, files that failed (per drop or File > Open)
    model_changed = Signal(object)  # BundleInfo of the newly active model, None when it failed
    first_painted = Signal()

    def __init__(
        self,
        settings: ViewerSettings | None = None,
        model_dir: str | None = None,
        predictor_factory: Callable[[str], Any] | None = None,
        load_image: Callable[[str], XRayImage] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings or ViewerSettings()
        self._requested_model_dir = model_dir
        self._predictor_factory = predictor_factory
        self._load_image = load_image
        self.docs: dict[int, ImageDocument] = {}
        self.current: ImageDocument | None = None
        self._next_doc_id = 1
        self._next_request = 1
        self._request_errors: dict[int, list[tuple[str, str]]] = {}
        self._open_paths_by_request: dict[int, list[str]] = {}
        self.generation = 0
        self.model_info: Any = None
        self.model_dir: str = ""
        self.device = ""
        self.model_state = "idle"  # "loading", "ready", "failed"
        self._started = False
        self._painted = False
        self._closing = False
        self._pending_open: list[str] = []
        self._call_handlers: dict[int, tuple[Callable[[Any], None], Callable[[str], None]]] = {}
        self._next_token = 1
        self.loader: ImageLoader | None = None
        self.inference: InferenceWorker | None = None

        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        self.canvas = ImageCanvas()
        self.setCentralWidget(self.canvas)
        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_settings()
        self._update_enabled()
        self._update_annotations()
        if self.settings.geometry() is None:
            self.resize(1440, 900)

    # ------------------------------------------------------------------------------------------
    # construction
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.thumbnails = ThumbnailList()
        self.results = ResultsPanel()
        self.overlay_panel = OverlayPanel(_INITIAL_COLORMAPS)
        self.tags = TagsPanel()
        self.messages = MessagesPanel()
        self.thumbnails_dock = self._dock("Images", self.thumbnails, left, "images_dock")
        self.results_dock = self._dock("AI result", self.results, right, "results_dock")
        self.overlay_dock = self._dock("Grad-CAM", self.overlay_panel, right, "overlay_dock")
        self.tags_dock = self._dock("DICOM tags", self.tags, right, "tags_dock")
        self.messages_dock = self._dock("Messages", self.messages, right, "messages_dock")
        self.tabifyDockWidget(self.tags_dock, self.messages_dock)
        self.tags_dock.raise_()
        self.resizeDocks([self.thumbnails_dock], [170], Qt.Orientation.Horizontal)
        self.resizeDocks([self.results_dock], [400], Qt.Orientation.Horizontal)
        vertical = Qt.Orientation.Vertical
        self.resizeDocks([self.results_dock, self.overlay_dock, self.tags_dock], [230, 260, 330], vertical)

    def _build_actions(self) -> None:
        self.actions_by_id: dict[str, QAction] = {}
        handlers: dict[str, Callable[[], None]] = {
            "open": self.open_dialog,
            "open_folder": self.open_folder_dialog,
            "export": self.show_export_dialog,
            "close_image": self.close_current,
            "quit": self.close,
            "default_window": lambda: self.apply_preset("0"),
            "invert": self.toggle_invert,
            "fit": self.canvas.fit,
            "zoom_in": self.canvas.zoom_in,
            "zoom_out": self.canvas.zoom_out,
            "actual_size": lambda: self.canvas.set_zoom(1.0),
            "reset_view": self.reset_view,
            "rotate_left": self.canvas.rotate_left,
            "rotate_right": self.canvas.rotate_right,
            "flip_h": self.canvas.flip_horizontal,
            "flip_v": self.canvas.flip_vertical,
            "fullscreen": self.toggle_full_screen,
            "prev_image": lambda: self.step_image(-1),
            "next_image": lambda: self.step_image(1),
            "overlay": None,  # checkable, wired below
            "models": self.show_model_manager,
            "train": self.show_training_dialog,
            "help": self.show_help,
        }
        for shortcut in SHORTCUTS:
            action = QAction(shortcut.text, self)
            action.setObjectName(shortcut.action)
            action.setShortcuts([QKeySequence(k) for k in shortcut.keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.setToolTip(f"{shortcut.help} ({shortcut.keys[0]})")
            action.setStatusTip(shortcut.help)
            handler = handlers.get(shortcut.action)
            if handler is not None:
                action.triggered.connect(handler)
            self.addAction(action)  # shortcuts work even when the menu bar is hidden (full screen)
            self.actions_by_id[shortcut.action] = action
        overlay = self.actions_by_id["overlay"]
        overlay.setCheckable(True)
        overlay.toggled.connect(self.set_overlay_visible)
        self.actions_by_id["fullscreen"].setCheckable(True)
        self.actions_by_id["invert"].setCheckable(True)
        # Presets 1-9: their names are the same for every image (the windows are computed per image).
        from viewer.presets import PRESET_HELP

        self.preset_actions: list[QAction] = []
        for key, name, text in PRESET_HELP[1:]:
            action = QAction(f"{name}", self)
            action.setShortcut(QKeySequence(key))
            action.setStatusTip(text)
            action.setToolTip(f"{name}: {text} ({key})")
            action.triggered.connect(lambda _checked=False, k=key: self.apply_preset(k))
            self.addAction(action)
            self.preset_actions.append(action)
        self.canvas.addActions(
            [self.actions_by_id[a] for a in ("fit", "reset_view", "invert", "rotate_left", "rotate_right")]
            + [self.actions_by_id["flip_h"], self.actions_by_id["flip_v"], self.actions_by_id["overlay"]]
        )

    def _build_menus(self) -> None:
        a = self.actions_by_id
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([a["open"], a["open_folder"]])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        file_menu.addActions([a["export"], a["close_image"]])
        close_all = file_menu.addAction("Close &all images")
        close_all.triggered.connect(self.close_all)
        file_menu.addSeparator()
        file_menu.addAction(a["quit"])

        view = bar.addMenu("&View")
        view.addActions([a["fit"], a["zoom_in"], a["zoom_out"], a["actual_size"], a["reset_view"]])
        view.addSeparator()
        view.addActions([a["rotate_left"], a["rotate_right"], a["flip_h"], a["flip_v"]])
        view.addSeparator()
        view.addActions([a["prev_image"], a["next_image"]])
        view.addSeparator()
        view.addAction(a["fullscreen"])
        panels = view.addMenu("&Panels")
        for dock in (self.thumbnails_dock, self.results_dock, self.overlay_dock, self.tags_dock, self.messages_dock):
            panels.addAction(dock.toggleViewAction())

        window = bar.addMenu("&Window/Level")
        window.addActions([a["default_window"], *self.preset_actions])
        window.addSeparator()
        window.addAction(a["invert"])

        ai = bar.addMenu("&AI")
        ai.addAction(a["overlay"])
        ai.addSeparator()
        ai.addActions([a["models"], a["train"]])

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(a["help"])
        about = help_menu.addAction("&About CXR Viewer")
        about.triggered.connect(self.show_about)

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Tools")
        bar.setObjectName("main_toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        from PySide6.QtCore import QSize

        bar.setIconSize(QSize(20, 20))
        for entry in TOOLBAR:
            if entry is None:
                bar.addSeparator()
                continue
            action_id, icon_name = entry
            action = self.actions_by_id[action_id]
            action.setIcon(icon(icon_name))
            bar.addAction(action)
            button = bar.widgetForAction(action)
            if action_id in TOOLBAR_LABELS:
                action.setIconText(TOOLBAR_LABELS[action_id])
            elif button is not None:
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.actions_by_id["close_image"].setIcon(icon("close"))
        self.actions_by_id["fullscreen"].setIcon(icon("fullscreen"))
        self.toolbar = bar

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.pixel_label = QLabel("")
        self.wl_label = QLabel("")
        self.zoom_label = QLabel("")
        self.model_label = QLabel("Model: not loaded")
        self.disclaimer_label = QLabel(DISCLAIMER)
        self.disclaimer_label.setObjectName("disclaimer")
        for label, tip in (
            (self.pixel_label, "Pixel under the cursor: position and stored value"),
            (self.wl_label, "Window centre / width in stored pixel values"),
            (self.zoom_label, "Zoom: screen pixels per image pixel"),
            (self.model_label, "Active model and the device it runs on"),
        ):
            label.setToolTip(tip)
            status.addPermanentWidget(label)
        status.addPermanentWidget(self.disclaimer_label)

    def _connect(self) -> None:
        self.canvas.window_changed.connect(self._on_window_changed)
        self.canvas.view_changed.connect(self._on_view_changed)
        self.canvas.cursor_moved.connect(self._on_cursor)
        self.canvas.files_dropped.connect(self.open_paths)
        self.thumbnails.document_selected.connect(self.show_document)
        self.overlay_panel.visibility_changed.connect(self.actions_by_id["overlay"].setChecked)
        self.overlay_panel.opacity_changed.connect(self._on_opacity)
        self.overlay_panel.colormap_changed.connect(self._on_colormap)
        self.overlay_panel.target_changed.connect(self.refresh_overlay)

    # ------------------------------------------------------------------------------------------
    # settings
    def _restore_settings(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        self.overlay_panel.set_opacity(self.settings.overlay_opacity)
        self.canvas.set_overlay_opacity(self.settings.overlay_opacity)
        self.overlay_panel.set_colormap(self.settings.colormap)
        if self.settings.overlay_visible:
            self.actions_by_id["overlay"].setChecked(True)

    def save_settings(self) -> None:
        self.settings.set_geometry(self.saveGeometry())
        self.settings.set_window_state(self.saveState())
        self.settings.overlay_opacity = self.overlay_panel.opacity()
        self.settings.colormap = self.overlay_panel.colormap()
        self.settings.overlay_visible = self.actions_by_id["overlay"].isChecked()
        self.settings.sync()

    # ------------------------------------------------------------------------------------------
    # start-up and shutdown
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint and not self._painted:
            self._painted = True
            emit(self.first_painted)
            # Heavy work starts only once the window is on screen.
            QTimer.singleShot(0, self.start_background)
        return super().event(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        # Offscreen platforms may never paint: start anyway shortly after showing.
        QTimer.singleShot(300, self.start_background)

    def start_background(self) -> None:
        """Start the loader and inference threads, load the model, open files given at start."""
        if self._started or self._closing:
            return
        self._started = True
        self.loader = ImageLoader(self._load_image)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_load_failed)
        self.loader.batch_finished.connect(self._on_batch_finished)
        self.loader.start()

        self.inference = InferenceWorker(self._predictor_factory)
        w = self.inference
        w.model_loading.connect(self._on_model_loading)
        w.model_ready.connect(self._on_model_ready)
        w.model_failed.connect(self._on_model_failed)
        w.predicted.connect(self._on_predicted)
        w.explained.connect(self._on_explained)
        w.job_failed.connect(self._on_job_failed)
        w.call_done.connect(self._on_call_done)
        w.call_failed.connect(self._on_call_failed)
        w.colormaps_ready.connect(self._on_colormaps_ready)
        w.idle.connect(self._update_model_label)
        w.start()
        w.post(w.warm_colormaps)
        model_dir = self._requested_model_dir or _model_dir_default(self.settings)
        self.load_model(model_dir)
        if self._pending_open:
            paths, self._pending_open = self._pending_open, []
            self.open_paths(paths)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        training = getattr(self, "_training_dialog", None)
        if training is not None and training.is_running():
            answer = QMessageBox.question(
                self,
                "Training in progress",
                "A model is being trained. Stop the training and quit?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            training.cancel_and_wait()
        self._closing = True
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the worker threads (the running job, if any, finishes first)."""
        if self.inference is not None:
            self.inference.queue.clear()
        if self.loader is not None:
            for request in range(self._next_request):
                self.loader.cancel(request)
        if self.loader is not None:
            self.loader.stop(timeout=30)
        if self.inference is not None:
            self.inference.stop()  # the running job (at most one prediction) finishes first

    # ------------------------------------------------------------------------------------------
    # opening files
    def open_paths(self, paths: Sequence[str]) -> int:
        """Open files and folders (searched recursively) in the loader thread; returns the request id."""
        paths = [str(p) for p in paths if str(p)]
        if not paths:
            return 0
        if not self._started:
            self._pending_open.extend(paths)
            return 0
        request = self._next_request
        self._next_request += 1
        self._request_errors[request] = []
        self._open_paths_by_request[request] = paths
        self.statusBar().showMessage(f"Opening {self._describe_paths(paths)}…")
        self.loader.load_paths(request, paths)
        return request

    @staticmethod
    def _describe_paths(paths: Sequence[str]) -> str:
        return Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} items"

    def drop_mime(self, mime: QMimeData) -> int:
        """Open what a drag carries (also used by tests)."""
        return self.open_paths(mime_paths(mime))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        accept_file_drag(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt override
        accept_file_drag(event)

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.drop_mime(event.mimeData()):
            event.acceptProposedAction()

    def open_dialog(self) -> None:
        from viewer.files import file_dialog_filter

        files, _ = QFileDialog.getOpenFileNames(self, "Open images", self.settings.last_folder, file_dialog_filter())
        if files:
            self.settings.last_folder = str(Path(files[0]).parent)
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", self.settings.last_folder)
        if folder:
            self.settings.last_folder = folder
            self.open_paths([folder])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_files
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_paths([p]))
            action.setEnabled(Path(path).exists())
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list").triggered.connect(self.settings.clear_recent)

    def _find_doc_by_path(self, path: str) -> ImageDocument | None:
        target = os.path.realpath(path)
        for doc in self.docs.values():
            if os.path.realpath(doc.path) == target:
                return doc
        return None

    def _on_loaded(self, request: int, path: str, image: XRayImage, prep: Any) -> None:
        if self._closing:
            return
        existing = self._find_doc_by_path(path)
        if existing is not None:  # opened twice: show the one we have
            if self.current is None:
                self.show_document(existing.doc_id)
            return
        doc = ImageDocument(
            doc_id=self._next_doc_id,
            path=Path(path),
            image=image,
            thumbnail=prep.thumbnail,
            window=prep.window,
            default_window=prep.window,
            renderer=prep.renderer,
            generation=self.generation,
        )
        self._next_doc_id += 1
        self.docs[doc.doc_id] = doc
        self.thumbnails.add_document(doc.doc_id, doc.name, prep.thumbnail, f"{path}\n{describe_image(image)}")
        for warning in image.extra.get("warnings", []) or []:
            self.messages.add(f"{doc.name}: {warning}", "warning")
        if self.current is None:
            self.show_document(doc.doc_id)
        self._queue_prediction(doc)
        self._update_enabled()
        emit(self.document_opened, doc.doc_id)

    def _on_load_failed(self, request: int, path: str, message: str) -> None:
        self._request_errors.setdefault(request, []).append((path, message))
        self.messages.add(message, "error")

    def _on_batch_finished(self, request: int, ok: int, bad: int) -> None:
        paths = self._open_paths_by_request.pop(request, [])
        errors = self._request_errors.pop(request, [])
        if ok:
            for p in paths:
                self.settings.add_recent(str(Path(p).resolve()))
        if bad:
            what = f"{bad} file{'s' if bad != 1 else ''} could not be opened"
            text = f"Opened {ok} image{'s' if ok != 1 else ''}; {what} (see Messages)"
            self.messages_dock.show()
            self.messages_dock.raise_()
            if bad == 1 and errors:
                text = f"Opened {ok} image{'s' if ok != 1 else ''}; {errors[0][1]}"
        elif ok == 0:
            text = "No supported images found (PNG, JPEG or DICOM)"
            self.messages.add(f"No supported images in {', '.join(paths)}", "warning")
        else:
            text = f"Opened {ok} image{'s' if ok != 1 else ''}"
        self.statusBar().showMessage(text, 15000)
        emit(self.open_finished, ok, bad)

    # ------------------------------------------------------------------------------------------
    # documents
    def document_ids(self) -> list[int]:
        return self.thumbnails.document_ids()

    def show_document(self, doc_id: int) -> None:
        doc = self.docs.get(doc_id)
        if doc is None or doc is self.current:
            return
        self.current = doc
        self.thumbnails.select_document(doc_id)
        self.canvas.set_image(doc.image, doc.window, doc.invert, doc.default_window, doc.renderer)
        self.canvas.set_overlay_visible(self.actions_by_id["overlay"].isChecked())
        self.actions_by_id["invert"].setChecked(doc.invert)
        self.tags.set_image(doc.image)
        self.setWindowTitle(f"{doc.name} — {APP_TITLE}")
        if self.inference is not None:
            self.inference.queue.prioritise(doc_id)
        self._show_result(doc)
        self.refresh_overlay()
        self._on_window_changed(doc.window)
        self._on_view_changed()

    def step_image(self, step: int) -> None:
        ids = self.document_ids()
        if not ids:
            return
        if self.current is None or self.current.doc_id not in ids:
            self.show_document(ids[0])
            return
        index = ids.index(self.current.doc_id) + step
        if 0 <= index < len(ids):
            self.show_document(ids[index])

    def close_document(self, doc_id: int) -> None:
        doc = self.docs.pop(doc_id, None)
        if doc is None:
            return
        if self.inference is not None:
            self.inference.queue.cancel_doc(doc_id)  # its waiting jobs go; a running one is ignored
        ids = self.document_ids()
        index = ids.index(doc_id) if doc_id in ids else 0
        self.thumbnails.remove_document(doc_id)
        if self.current is doc:
            self.current = None
            remaining = self.document_ids()
            if remaining:
                self.show_document(remaining[min(index, len(remaining) - 1)])
            else:
                self.canvas.set_image(None)
                self.tags.set_image(None)
                self.setWindowTitle(APP_TITLE)
                self.results.show_state("No image")
                self._update_annotations()
                self.wl_label.setText("")
                self.zoom_label.setText("")
        self._update_enabled()
        emit(self.document_closed, doc_id)

    def close_current(self) -> None:
        if self.current is not None:
            self.close_document(self.current.doc_id)

    def close_all(self) -> None:
        for doc_id in list(self.docs):
            self.close_document(doc_id)

    def _update_enabled(self) -> None:
        has = self.current is not None
        for name in (
            "export", "close_image", "default_window", "invert", "fit", "zoom_in", "zoom_out", "actual_size",
            "reset_view", "rotate_left", "rotate_right", "flip_h", "flip_v", "prev_image", "next_image",
        ):  # fmt: skip
            self.actions_by_id[name].setEnabled(has)
        for action in self.preset_actions:
            action.setEnabled(has)

    # ------------------------------------------------------------------------------------------
    # reading tools
    def apply_preset(self, key: str) -> None:
        doc = self.current
        if doc is None:
            return
        if doc.presets is None:
            doc.presets = window_presets(doc.image)
        preset = next((p for p in doc.presets if p.key == key), None)
        if preset is None:
            return
        self.canvas.set_window(preset.window)
        self.statusBar().showMessage(f"Window preset {key}: {preset.name}", 4000)

    def toggle_invert(self) -> None:
        if self.current is None:
            return
        self.canvas.set_inverted(not self.canvas.inverted())
        self.current.invert = self.canvas.inverted()
        self.actions_by_id["invert"].setChecked(self.current.invert)

    def reset_view(self) -> None:
        """Esc: fitted, no rotation or flips, the default window and no inversion."""
        if self.current is None:
            return
        self.canvas.reset_view()
        self.canvas.set_inverted(False)
        self.current.invert = False
        self.actions_by_id["invert"].setChecked(False)
        self.canvas.set_window(self.current.default_window)

    def toggle_full_screen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
            if getattr(self, "_was_maximized", False):
                self.showMaximized()
        else:
            self._was_maximized = self.isMaximized()
            self.showFullScreen()
        self.actions_by_id["fullscreen"].setChecked(self.isFullScreen())

    def _on_window_changed(self, window: Window | None) -> None:
        if window is None or self.current is None:
            self.wl_label.setText("")
            return
        self.current.window = window
        self.wl_label.setText(f"C {window.center:.6g} / W {window.width:.6g}")
        self._update_annotations()

    def _on_view_changed(self) -> None:
        if self.current is None:
            return
        self.zoom_label.setText(f"Zoom {self.canvas.zoom() * 100:.0f}%")
        self._update_annotations()

    def _on_cursor(self, info: PixelInfo | None) -> None:
        if info is None or self.current is None:
            self.pixel_label.setText("")
            return
        unit = " HU" if self.current.image.meta.modality.upper() == "CT" else ""
        value = f"{info.value:.6g}" if not float(info.value).is_integer() else f"{int(info.value)}"
        self.pixel_label.setText(f"x {info.x}, y {info.y}: {value}{unit}")

    def _update_annotations(self) -> None:
        doc = self.current
        if doc is None:
            self.canvas.set_annotations({})
            return
        window = self.canvas.window() or doc.window
        view = []
        if self.canvas.rotation():
            view.append(f"rotated {self.canvas.rotation()}°")
        if self.canvas.is_mirrored():
            view.append("mirrored")
        if self.canvas.inverted():
            view.append("inverted")
        bottom_left = [f"C {window.center:.5g}  W {window.width:.5g}", f"Zoom {self.canvas.zoom() * 100:.0f}%"]
        if view:
            bottom_left.append(", ".join(view))
        top_right: list[str] = []
        if doc.prediction is not None:
            p = doc.prediction
            top_right.append(f"AI: {p.label} {_percent(p.confidence)}")
            if self.canvas.overlay_visible() and self.canvas.has_overlay():
                target = self._overlay_target(doc)
                if target is not None:
                    top_right.append(f"Grad-CAM: {self.model_info.class_names[target[0]]}")
        self.canvas.set_annotations(
            {
                "top_left": [doc.name, describe_image(doc.image)],
                "top_right": top_right,
                "bottom_left": bottom_left,
                "bottom_right": ["Research use only"],
            }
        )

    # ------------------------------------------------------------------------------------------
    # model and predictions
    def load_model(self, model_dir: str) -> None:
        """Make ``model_dir`` the active model: load it in the worker, then predict every image again."""
        if self.inference is None:
            self._requested_model_dir = model_dir
            return
        self.generation += 1
        self.model_dir = str(model_dir)
        self.model_state = "loading"
        self.model_info = None
        self.inference.queue.clear()
        self.inference.submit(Job(kind="load", generation=self.generation, path=str(model_dir)), front=True)
        ordered = self._ordered_docs()
        for doc in ordered:
            doc.clear_results(self.generation)
            self.thumbnails.set_badge(doc.doc_id, "…")
        self.inference.submit_many(
            Job(kind="predict", generation=self.generation, doc_id=d.doc_id, image=d.image) for d in ordered
        )
        self.model_label.setText("Loading model…")
        self.results.set_model("Model: loading…")
        if self.current is not None:
            self._show_result(self.current)
            self.canvas.clear_overlay()

    def _ordered_docs(self) -> list[ImageDocument]:
        """Documents with the one on screen first."""
        docs = [self.docs[i] for i in self.document_ids() if i in self.docs]
        if self.current is not None and self.current in docs:
            docs.remove(self.current)
            docs.insert(0, self.current)
        return docs

    def _queue_prediction(self, doc: ImageDocument) -> None:
        if self.inference is None or self.model_state == "failed":
            return
        doc.generation = self.generation
        self.inference.submit(Job(kind="predict", generation=self.generation, doc_id=doc.doc_id, image=doc.image))

    def _on_model_loading(self, generation: int, path: str) -> None:
        if generation == self.generation:
            self.statusBar().showMessage("Loading model…")

    def _on_model_ready(self, generation: int, info: Any, device: str) -> None:
        if generation != self.generation:
            return
        self.model_info = info
        self.device = device
        self.model_state = "ready"
        self.results.set_classes(info.class_names)
        self.overlay_panel.set_classes(info.class_names)
        self.results.set_model(f"Model: {info.display_name} ({info.architecture}) · {device}")
        self._update_model_label()
        self.statusBar().showMessage(f"Model {info.display_name} ready on {device}", 5000)
        if self.current is not None:
            self._show_result(self.current)
        emit(self.model_changed, info)

    def _on_model_failed(self, generation: int, message: str) -> None:
        if generation != self.generation:
            return
        self.model_state = "failed"
        self.model_info = None
        if self.inference is not None:
            self.inference.queue.clear()
        self.model_label.setText("No model")
        self.results.set_model(f"Model: none ({message})")
        self.messages.add(f"The model could not be loaded: {message}", "error")
        self.statusBar().showMessage("No model loaded: the viewer works, without AI results", 15000)
        for doc in self.docs.values():
            self.thumbnails.set_badge(doc.doc_id, "")
        if self.current is not None:
            self._show_result(self.current)
        emit(self.model_changed, None)

    def _update_model_label(self) -> None:
        if self.model_state == "ready" and self.model_info is not None:
            pending = self.inference.queue.kinds().count("predict") if self.inference is not None else 0
            busy = f" · analysing {pending} more" if pending else ""
            self.model_label.setText(f"Model: {self.model_info.display_name} · {self.device}{busy}")

    def _on_predicted(self, generation: int, doc_id: int, prediction: Any) -> None:
        doc = self.docs.get(doc_id)
        if doc is None or generation != self.generation:
            return  # the image was closed or the model replaced meanwhile
        doc.prediction = prediction
        doc.error = ""
        badge = f"{prediction.label} {_badge_percent(prediction.confidence)}"
        self.thumbnails.set_badge(doc_id, badge, prediction.label)
        if doc is self.current:
            self._show_result(doc)
            self.refresh_overlay()
        self._update_model_label()
        emit(self.prediction_shown, doc_id)

    def _on_job_failed(self, generation: int, doc_id: int, kind: str, message: str) -> None:
        doc = self.docs.get(doc_id)
        if doc is None or generation != self.generation:
            return
        if kind == "predict":
            doc.error = message
            self.thumbnails.set_badge(doc_id, "failed")
        else:
            doc.pending_explain.clear()
            self.overlay_panel.status.setText(f"Grad-CAM failed: {message}")
        self.messages.add(f"{doc.name}: {kind} failed: {message}", "error")
        if doc is self.current:
            self._show_result(doc)

    def _show_result(self, doc: ImageDocument) -> None:
        if self.model_info is not None:
            self.overlay_panel.set_predicted(
                self.model_info.class_names, None if doc.prediction is None else doc.prediction.class_index
            )
        if doc.prediction is not None:
            self.results.show_prediction(doc.prediction)
        elif self.model_state == "failed":
            self.results.show_state("No model loaded", "Open the model manager (Ctrl+M) to choose one.")
        elif self.model_state in ("loading", "idle"):
            self.results.show_state("Loading model…", "The image is analysed as soon as the model is ready.")
        elif doc.error:
            self.results.show_state("Prediction failed", doc.error)
        else:
            self.results.show_state("Analysing…")
        self._update_annotations()

    # ------------------------------------------------------------------------------------------
    # Grad-CAM overlay
    def _overlay_target(self, doc: ImageDocument) -> tuple[int, str] | None:
        if doc.prediction is None:
            return None
        chosen = self.overlay_panel.selected_class()
        class_index = doc.prediction.class_index if chosen is None else int(chosen)
        return class_index, self.overlay_panel.method()

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay_panel.set_overlay_checked(visible)
        self.canvas.set_overlay_visible(visible)
        if visible:
            self.refresh_overlay()
        self._update_annotations()

    def refresh_overlay(self) -> None:
        """Show the heat map for the current image and chosen class, computing it if needed."""
        doc = self.current
        if doc is None:
            return
        visible = self.actions_by_id["overlay"].isChecked()
        target = self._overlay_target(doc)
        if target is None:
            self.canvas.clear_overlay()
            self.overlay_panel.status.setText("Waiting for the prediction…" if visible else "")
            return
        explanation = doc.explanations.get(target)
        if explanation is not None:
            self._show_heatmap(doc, explanation)
            return
        self.canvas.clear_overlay()
        if not visible:
            self.overlay_panel.status.setText("")
            return
        if target not in doc.pending_explain and self.inference is not None:
            doc.pending_explain.add(target)
            job = Job(
                kind="explain",
                generation=self.generation,
                doc_id=doc.doc_id,
                image=doc.image,
                class_index=target[0],
                method=target[1],
            )
            self.inference.submit(job, front=True)
        self.overlay_panel.status.setText("Computing Grad-CAM…")
        self._update_annotations()

    def _on_explained(self, generation: int, doc_id: int, explanation: Any) -> None:
        doc = self.docs.get(doc_id)
        if doc is None or generation != self.generation:
            return
        key = (int(explanation.class_index), str(explanation.method))
        doc.explanations[key] = explanation
        doc.pending_explain.discard(key)
        if doc is self.current and self._overlay_target(doc) == key:
            self._show_heatmap(doc, explanation)

    def _show_heatmap(self, doc: ImageDocument, explanation: Any) -> None:
        from viewer.canvas import OVERLAY_SIDE
        from viewer.render import downsample, overlay_rgba

        heat, _ = downsample(explanation.heatmap_original, OVERLAY_SIDE)
        self.canvas.set_overlay(overlay_rgba(heat, self.overlay_panel.colormap()))
        self.results.show_lung_heat(explanation)
        empty = getattr(explanation, "is_empty", False)
        self.overlay_panel.status.setText(
            f"{explanation.class_name}: the gradients vanished, no evidence to show"
            if empty
            else f"{'Grad-CAM++' if explanation.method == 'gradcam++' else 'Grad-CAM'} for {explanation.class_name}"
        )
        self._update_annotations()
        emit(self.overlay_shown, doc.doc_id)

    def _on_opacity(self, value: float) -> None:
        self.canvas.set_overlay_opacity(value)

    def _on_colormap(self, name: str) -> None:
        self._update_colour_bar()
        if self.current is not None:
            self.refresh_overlay()

    def _on_colormaps_ready(self) -> None:
        from inference.overlay import COLORMAPS

        combo = self.overlay_panel.colormap_combo
        wanted = self.settings.colormap if combo.count() == 0 else combo.currentText()
        if [combo.itemText(i) for i in range(combo.count())] != list(COLORMAPS):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(list(COLORMAPS))
            combo.blockSignals(False)
            self.overlay_panel.set_colormap(wanted if wanted in COLORMAPS else COLORMAPS[0])
        self._update_colour_bar()

    def _update_colour_bar(self) -> None:
        try:
            from inference.overlay import colormap_lut
            from viewer.render import heat_alpha

            lut = colormap_lut(self.overlay_panel.colormap())
            self.overlay_panel.colour_bar.set_lut(lut, heat_alpha(np.linspace(0.0, 1.0, 256)))
        except (ValueError, ImportError):
            self.overlay_panel.colour_bar.set_lut(None)

    # ------------------------------------------------------------------------------------------
    # jobs that need the predictor (exports)
    def run_with_predictor(
        self, fn: Callable[[Any], Any], on_done: Callable[[Any], None], on_error: Callable[[str], None]
    ) -> int:
        """Run ``fn(predictor)`` in the inference thread; the callbacks run here, on the GUI thread."""
        if self.inference is None:
            on_error("The viewer is still starting.")
            return 0
        token = self._next_token
        self._next_token += 1
        self._call_handlers[token] = (on_done, on_error)
        self.inference.submit(Job(kind="call", generation=self.generation, fn=fn, token=token))
        return token

    def _on_call_done(self, token: int, result: Any) -> None:
        handlers = self._call_handlers.pop(token, None)
        if handlers is not None:
            handlers[0](result)

    def _on_call_failed(self, token: int, message: str) -> None:
        handlers = self._call_handlers.pop(token, None)
        if handlers is not None:
            handlers[1](message)

    # ------------------------------------------------------------------------------------------
    # dialogs (imported when first used: they are not needed to show the window)
    def show_help(self) -> None:
        from viewer.help_dialog import HelpDialog

        dialog = getattr(self, "_help_dialog", None) or HelpDialog(self)
        self._help_dialog = dialog
        dialog.show()
        dialog.raise_()

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "About CXR Viewer",
            "<h3>CXR Viewer</h3><p>An offline chest X-ray viewer with a COVID-19 / Normal / Pneumonia "
            f"classifier and Grad-CAM.</p><p><b>{DISCLAIMER}.</b></p>",
        )

    def show_export_dialog(self) -> None:
        from viewer.export_dialog import ExportDialog

        if self.current is None:
            return
        dialog = ExportDialog(self)
        dialog.exec()

    def show_model_manager(self) -> None:
        from viewer.model_manager import ModelManagerDialog

        dialog = ModelManagerDialog(self)
        dialog.exec()

    def show_training_dialog(self) -> None:
        from viewer.training_dialog import TrainingDialog

        dialog = getattr(self, "_training_dialog", None)
        if dialog is None:
            dialog = TrainingDialog(self)
            self._training_dialog = dialog
        dialog.show()
        dialog.raise_()

    def activate_model(self, model_dir: str) -> None:
        """Switch to ``model_dir``, remember it, and predict every opened image again."""
        from inference.paths import bundled_model_dir

        is_bundled = Path(model_dir).resolve() == bundled_model_dir().resolve()
        self.settings.active_model = "" if is_bundled else str(model_dir)
        self.load_model(str(model_dir))
