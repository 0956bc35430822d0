"""The window's dialogs, imported when first used (none is needed to show the window).

Each dialog talks to the session and the controller, never to the window's attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget

from viewer.controller import AnalysisController
from viewer.results_panel import DISCLAIMER
from viewer.session import Session
from viewer.settings import ViewerSettings

__all__ = ["WindowDialogs"]


class WindowDialogs:
    """Opens help, about, export, model manager and training over ``parent``; keeps help and training."""

    def __init__(
        self,
        parent: QWidget,
        session: Session,
        controller: AnalysisController,
        settings: ViewerSettings,
        activate_model: Callable[[str], None],
    ) -> None:
        self.parent, self.session, self.controller, self.settings = parent, session, controller, settings
        self.activate_model = activate_model
        self.help_dialog: Any = None
        self.training_dialog: Any = None

    def show_help(self) -> None:
        from viewer.help_dialog import HelpDialog

        self.help_dialog = self.help_dialog or HelpDialog(self.parent)
        self.help_dialog.show()
        self.help_dialog.raise_()

    def show_about(self) -> None:
        QMessageBox.about(
            self.parent,
            "About CXR Viewer",
            "<h3>CXR Viewer</h3><p>An offline chest X-ray viewer with a COVID-19 / Normal / Pneumonia "
            f"classifier and Grad-CAM.</p><p><b>{DISCLAIMER}.</b></p>",
        )

    def export_dialog(self) -> Any:
        from viewer.export_dialog import ExportDialog

        return ExportDialog(self.session, self.controller, self.settings, self.parent)

    def show_export_dialog(self) -> None:
        if self.session.current is not None:
            self.export_dialog().exec()

    def show_model_manager(self) -> None:
        from viewer.model_manager import ModelManagerDialog

        ModelManagerDialog(self.session, self.activate_model, self.parent).exec()

    def show_training_dialog(self) -> None:
        from viewer.training_dialog import TrainingDialog

        if self.training_dialog is None:
            self.training_dialog = TrainingDialog(self.session, self.activate_model, self.parent)
        self.training_dialog.show()
        self.training_dialog.raise_()

    def training_allows_quit(self) -> bool:
        """False when a training run is going and the user chose not to stop it."""
        return self.training_dialog is None or self.training_dialog.stop_for_quit()
