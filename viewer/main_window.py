"""The main window: a thin composition of actions, panels and the canvas over the session.

* :class:`~viewer.session.Session` owns the state (documents, current image, model, overlay);
* :class:`~viewer.controller.AnalysisController` owns the inference thread and its jobs;
* :class:`~viewer.opening.DocumentOpener` owns the loader thread and the pixel cache;
* :class:`~viewer.analysis.AnalysisScheduler` decides which analyses to ask for;
* the presenters (:mod:`viewer.presenters`) keep the widgets in step with the session;
* :class:`~viewer.view_commands.ViewCommands` holds the View and Go menu commands,
  :class:`~viewer.model_activation.ModelActivation` which model runs, and
  :class:`~viewer.window_dialogs.WindowDialogs` the dialogs.

The window builds these, wires the actions to them, shows messages and saves the settings.
Until the first paint nothing heavy is started (:meth:`MainWindow.start_background`), so the
window appears at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QMimeData, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QFileDialog, QMainWindow, QWidget

from inference.image import XRayImage
from viewer.actions import add_dock, build_actions, build_menus, build_toolbar, fill_recent_menu
from viewer.analysis import AnalysisScheduler
from viewer.appearance import apply_font_size, fit_to_available
from viewer.canvas import ImageCanvas, accept_file_drag, mime_paths
from viewer.controller import AnalysisController
from viewer.icons import icon
from viewer.messages_panel import MessagesPanel
from viewer.model_activation import ModelActivation
from viewer.opening import DocumentOpener, open_summary
from viewer.overlay_panel import OverlayPanel
from viewer.presenters import (
    CanvasPresenter,
    OverlayPresenter,
    ResultsPresenter,
    StatusPresenter,
    ThumbnailsPresenter,
)
from viewer.qt_compat import emit
from viewer.reading import install_reading
from viewer.reads import Reads
from viewer.results_panel import DISCLAIMER, ResultsPanel
from viewer.session import OverlayHeat, OverlaySettings, Session
from viewer.settings import ViewerSettings
from viewer.tags_panel import TagsPanel
from viewer.tools import install_tools
from viewer.view_commands import ViewCommands
from viewer.window_dialogs import WindowDialogs
from viewer.worklist_view import WorklistPanel

__all__ = ["MainWindow", "APP_TITLE"]

APP_TITLE = "CXR Viewer"
# Known colour map names, listed before matplotlib is imported; inference.overlay.COLORMAPS
# is the authority and replaces this list as soon as the inference thread has it.
_INITIAL_COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "hot")
SHUTDOWN_TIMEOUT_S = 5.0


class MainWindow(QMainWindow):
    """The viewer. ``predictor_factory`` and ``load_image`` replace the real ones in tests."""

    open_finished = Signal(int, int)  # files opened, files that failed (per drop or File > Open)
    model_changed = Signal(object)  # BundleInfo of the newly active model, None when it failed
    overlay_shown = Signal(int)  # doc id whose heat map is now on the canvas
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
        s = self.settings
        self.session = Session(
            OverlaySettings(visible=s.overlay_visible, opacity=s.overlay_opacity, colormap=s.colormap)
        )
        self.reads = Reads(report=self.session.message)  # annotations and verdicts, in the sidecar store
        self.controller = AnalysisController(predictor_factory, load_image)
        self.opener = DocumentOpener(self.session, load_image=load_image)
        self.scheduler = AnalysisScheduler(self.session, self.controller)
        self._started = self._painted = self._closing = False
        self._pending_open: list[str] = []
        self._model_dir = model_dir

        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        self.canvas = ImageCanvas()
        self.setCentralWidget(self.canvas)
        self.view = ViewCommands(self, APP_TITLE)
        self.dialogs = WindowDialogs(self, self.session, self.controller, self.settings, self.activate_model)
        self._build_docks()
        self.actions_by_id, self.preset_actions = build_actions(self, self._handlers(), self.view.apply_preset)
        docks = [self.thumbnails_dock, self.results_dock, self.overlay_dock, self.tags_dock, self.messages_dock]
        self.recent_menu = build_menus(
            self, self.actions_by_id, self.preset_actions, docks, self.close_all, self.dialogs.show_about
        )
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.toolbar = build_toolbar(self, self.actions_by_id)
        self.canvas.addActions(
            [self.actions_by_id[a] for a in ("fit", "reset_view", "invert", "rotate_left", "rotate_right")]
            + [self.actions_by_id[a] for a in ("flip_h", "flip_v", "overlay")]
        )
        self._connect()
        self.tools = install_tools(self)  # measuring tools, their actions and the Measurements panel
        install_reading(self)  # the verdict dock and keys, the compare view, the Reading menu
        apply_font_size(self.settings.font_size)
        self._restore_layout()
        self.view.update_enabled()
        if self.settings.geometry() is None:
            self.resize(1440, 900)
        fit_to_available(self)  # a saved or default size larger than this screen would overflow it
        self._fitted_when_shown = False

    # ------------------------------------------------------------------------------------------
    # construction
    def _build_docks(self) -> None:
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.thumbnails = WorklistPanel()  # the worklist
        self.results = ResultsPanel()
        self.overlay_panel = OverlayPanel(_INITIAL_COLORMAPS)
        self.tags = TagsPanel()
        self.messages = MessagesPanel()
        self.thumbnails_dock = add_dock(self, "Images", self.thumbnails, left, "images_dock")
        self.results_dock = add_dock(self, "AI result", self.results, right, "results_dock")
        self.overlay_dock = add_dock(self, "Grad-CAM", self.overlay_panel, right, "overlay_dock")
        self.tags_dock = add_dock(self, "DICOM tags", self.tags, right, "tags_dock")
        self.messages_dock = add_dock(self, "Messages", self.messages, right, "messages_dock")
        self.tabifyDockWidget(self.tags_dock, self.messages_dock)
        self.tags_dock.raise_()
        self.resizeDocks([self.thumbnails_dock], [330], Qt.Orientation.Horizontal)
        self.resizeDocks([self.results_dock], [400], Qt.Orientation.Horizontal)
        vertical = Qt.Orientation.Vertical
        self.resizeDocks([self.results_dock, self.overlay_dock, self.tags_dock], [230, 260, 330], vertical)

    def _handlers(self) -> dict[str, Callable[[], None]]:
        canvas, view, dialogs = self.canvas, self.view, self.dialogs
        return {
            "open": self.open_dialog,
            "open_folder": self.open_folder_dialog,
            "export": dialogs.show_export_dialog,
            "close_image": self.close_current,
            "quit": self.close,
            "default_window": lambda: view.apply_preset("0"),
            "invert": view.toggle_invert,
            "fit": canvas.fit,
            "zoom_in": canvas.zoom_in,
            "zoom_out": canvas.zoom_out,
            "actual_size": lambda: canvas.set_zoom(1.0),
            "reset_view": view.reset_view,
            "rotate_left": canvas.rotate_left,
            "rotate_right": canvas.rotate_right,
            "flip_h": canvas.flip_horizontal,
            "flip_v": canvas.flip_vertical,
            "fullscreen": view.toggle_full_screen,
            "prev_image": lambda: self.thumbnails_presenter.step(-1),  # in the worklist's order
            "next_image": lambda: self.thumbnails_presenter.step(1),
            "first_image": lambda: self.thumbnails_presenter.go_to_end(first=True),
            "last_image": lambda: self.thumbnails_presenter.go_to_end(first=False),
            "corner_text": lambda: view.set_corner_text_visible(self.actions_by_id["corner_text"].isChecked()),
            "hide_identifiers": lambda: view.set_hide_identifiers(self.actions_by_id["hide_identifiers"].isChecked()),
            "font_larger": lambda: view.change_font_size(+1),
            "font_smaller": lambda: view.change_font_size(-1),
            "font_reset": lambda: view.change_font_size(0),
            "models": dialogs.show_model_manager,
            "train": dialogs.show_training_dialog,
            "help": dialogs.show_help,
        }

    def _connect(self) -> None:
        session, ev = self.session, self.session.events
        self.canvas_presenter = CanvasPresenter(session, self.canvas, self.tags, self.actions_by_id["invert"])
        self.overlay_presenter = OverlayPresenter(
            session, self.overlay_panel, self.actions_by_id["overlay"], self.canvas
        )
        self.results_presenter = ResultsPresenter(session, self.results)
        self.results.set_show_abstained_probabilities(self.settings.show_abstained_probabilities)
        self.results.show_probabilities_changed.connect(
            lambda show: setattr(self.settings, "show_abstained_probabilities", show)
        )
        self.thumbnails_presenter = ThumbnailsPresenter(session, self.thumbnails, self.reads)
        self.status_presenter = StatusPresenter(
            session, self.canvas, self.statusBar(), self.scheduler.pending, DISCLAIMER
        )
        for name in ("pixel_label", "wl_label", "zoom_label", "model_label", "disclaimer_label"):
            setattr(self, name, getattr(self.status_presenter, name))
        self.view.set_hide_identifiers(self.settings.hide_identifiers)
        self.view.set_corner_text_visible(self.settings.corner_text_visible)
        self.view.connect()
        self.models = ModelActivation(
            session, self.scheduler, self.settings, self.statusBar().showMessage,
            lambda info: emit(self.model_changed, info), self._model_dir,
        )  # fmt: skip
        ev.overlay_heat_changed.connect(self._on_heat)
        ev.message.connect(self._on_message)
        self.canvas.cursor_moved.connect(lambda info: self.pixel_label.setText(self.canvas_presenter.pixel_text(info)))
        self.canvas.files_dropped.connect(self.open_paths)
        self.scheduler.follow_canvas(self.canvas)
        self.opener.open_finished.connect(self._on_open_finished)
        self.controller.colormaps_ready.connect(self._on_colormaps_ready)

    def _restore_layout(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)

    def save_settings(self) -> None:
        overlay = self.session.overlay
        self.settings.set_geometry(self.saveGeometry())
        self.settings.set_window_state(self.saveState())
        self.settings.overlay_opacity = overlay.opacity
        self.settings.colormap = overlay.colormap
        self.settings.overlay_visible = overlay.visible
        self.settings.sync()

    # ------------------------------------------------------------------------------------------
    # start-up and shutdown
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint and not self._painted:
            self._painted = True
            self.controller.preload.wait_gil_bound(timeout=5.0)  # once shown, never frozen by it
            emit(self.first_painted)
            QTimer.singleShot(0, self.start_background)  # heavy work starts once the window is on screen
        return super().event(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._fitted_when_shown:  # again with the title bar known, on the screen it opened on
            self._fitted_when_shown = True
            for delay_ms in (0, 300):  # window managers report the frame (title bar) a little later
                QTimer.singleShot(delay_ms, self, self._fit_to_screen)  # cancelled with the window

    def _fit_to_screen(self) -> None:
        if not self._closing:
            fit_to_available(self)
        QTimer.singleShot(300, self.start_background)  # offscreen platforms may never paint

    def start_background(self) -> None:
        """Start the loader and inference threads, load the model, open files given at start."""
        if self._started or self._closing:
            return
        self._started = True
        self.opener.start()
        self.controller.start()
        self.models.started = True
        model = self.models.initial()
        if not self._pending_open:
            self.load_model(model)
            return
        # Files given at start: the first image goes on screen before TensorFlow's import begins
        # (it holds the GIL for long stretches); the model follows at once, or after 2 s at most.
        paths, self._pending_open = self._pending_open, []
        self.open_paths(paths)
        start_model = lambda *_args: self._closing or self.models.load_if_idle(model)  # noqa: E731
        self.session.events.current_changed.connect(start_model)
        self.opener.open_finished.connect(start_model)
        QTimer.singleShot(2000, start_model)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self.dialogs.training_allows_quit():
            event.ignore()
            return
        self._closing = True
        self.save_settings()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Cancel every job and stop both threads, waiting at most ``timeout`` s for each; True if both ended."""
        loader_done = self.opener.stop(timeout=timeout)
        inference_done = self.controller.shutdown(timeout=timeout)
        return loader_done and inference_done

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
        what = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} items"
        self.statusBar().showMessage(f"Opening {what}…")
        return self.opener.open_paths(paths)

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
        fill_recent_menu(self.recent_menu, self.settings, lambda path: self.open_paths([path]))

    def _on_open_finished(self, ok: int, bad: int) -> None:
        paths, errors = self.opener.last_paths, self.opener.last_errors
        if ok:
            for p in paths:
                self.settings.add_recent(str(Path(p).resolve()))
        if bad:
            self.messages_dock.show()
            self.messages_dock.raise_()
        elif ok == 0:
            self.session.message(f"No supported images in {', '.join(paths)}", "warning")
        duplicates = self.opener.last_duplicates
        self.statusBar().showMessage(open_summary(ok, bad, errors, duplicates), 15000)
        emit(self.open_finished, ok, bad)

    # ------------------------------------------------------------------------------------------
    # documents and reading tools (the session holds the state; these are the menu commands)
    def document_ids(self) -> list[int]:
        return self.session.document_ids()

    def show_document(self, doc_id: int) -> None:
        self.session.set_current(doc_id)

    def close_document(self, doc_id: int) -> None:
        self.session.remove_document(doc_id)

    def close_current(self) -> None:
        if self.session.current is not None:
            self.session.remove_document(self.session.current.doc_id)

    def close_all(self) -> None:
        self.session.clear()

    def apply_preset(self, key: str) -> None:
        self.view.apply_preset(key)

    # ------------------------------------------------------------------------------------------
    # model, results, messages
    def load_model(self, model_dir: str) -> None:
        """Load ``model_dir`` in the inference thread, then predict every image again."""
        self.models.load(model_dir)

    def activate_model(self, model_dir: str) -> None:
        """Switch to ``model_dir``, remember it, and predict every opened image again."""
        self.models.activate(model_dir)

    def _on_heat(self, heat: OverlayHeat | None) -> None:
        if heat is not None:
            emit(self.overlay_shown, heat.doc_id)

    def _on_message(self, text: str, level: str) -> None:
        self.messages.add(text, level)

    def _on_colormaps_ready(self) -> None:
        from inference.overlay import COLORMAPS

        wanted = self.session.overlay.colormap
        self.overlay_panel.set_colormaps(list(COLORMAPS), wanted if wanted in COLORMAPS else COLORMAPS[0])
        self.overlay_presenter.update_colour_bar()

    def export_dialog(self) -> Any:
        return self.dialogs.export_dialog()
