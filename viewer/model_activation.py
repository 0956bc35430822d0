"""Which model the viewer runs, and what the user is told about it.

The model named at start, else the remembered one, else the bundled one; a remembered model that no
longer loads falls back once to the bundled model (issue 17) so the viewer is never left without AI.
The loading itself is the :class:`~viewer.analysis.AnalysisScheduler`'s job, in the inference thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from viewer.analysis import AnalysisScheduler
from viewer.session import FAILED, READY, ModelStatus, Session
from viewer.settings import ViewerSettings

__all__ = ["ModelActivation", "bundled_model_dir"]


def bundled_model_dir() -> str:
    from inference.paths import bundled_model_dir as bundled

    return str(bundled())


class ModelActivation:
    """Chooses, loads and activates models; ``show_status(text, ms)`` and ``announce(info | None)`` report."""

    def __init__(
        self,
        session: Session,
        scheduler: AnalysisScheduler,
        settings: ViewerSettings,
        show_status: Callable[[str, int], None],
        announce: Callable[[Any], None],
        requested: str | None = None,
    ) -> None:
        self.session, self.scheduler, self.settings = session, scheduler, settings
        self.show_status, self.announce = show_status, announce
        self.requested = requested
        self.started = False  # set when the inference thread runs; a load asked before waits for it
        self._fallback_tried = False
        session.events.model_changed.connect(self._on_model_changed)

    def initial(self) -> str:
        """The model to load at start."""
        return self.requested or self.settings.active_model or bundled_model_dir()

    def load(self, model_dir: str) -> None:
        """Load ``model_dir`` in the inference thread, then predict every image again."""
        if not self.started:
            self.requested = str(model_dir)
            return
        self.scheduler.load_model(str(model_dir))

    def load_if_idle(self, model_dir: str) -> None:
        """Load ``model_dir`` unless a model is already loading or loaded (the deferred start)."""
        if self.session.model.state == "idle":
            self.load(model_dir)

    def activate(self, model_dir: str) -> None:
        """Switch to ``model_dir``, remember it, and predict every opened image again."""
        is_bundled = Path(model_dir).resolve() == Path(bundled_model_dir()).resolve()
        self.settings.active_model = "" if is_bundled else str(model_dir)
        self.load(str(model_dir))

    def _on_model_changed(self, status: ModelStatus) -> None:
        if status.state == READY:
            info = status.info
            self.show_status(f"Model {info.display_name} ready on {status.device}", 5000)
            self.announce(info)
        elif status.state == FAILED:
            self._on_model_failed(status)
        else:
            self.show_status("Loading model…", 0)

    def _on_model_failed(self, status: ModelStatus) -> None:
        self.session.message(f"The model could not be loaded: {status.message}", "error")
        remembered = self.settings.active_model
        if remembered and Path(remembered) == Path(status.path) and not self._fallback_tried:
            self._fallback_tried = True
            self.settings.active_model = ""
            text = f"The remembered model {Path(remembered).name} could not be loaded; using the bundled model"
            self.session.message(text, "warning")
            self.show_status(text, 15000)
            self.load(bundled_model_dir())
            return
        self.show_status("No model loaded: the viewer works, without AI results", 15000)
        self.announce(None)
