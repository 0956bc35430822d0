"""Plain-Python events: the session's way to tell widgets that something changed (no Qt here).

An :class:`Event` is a list of callbacks called in order, on the thread that changed the
state (always the GUI thread for the session). The method is called ``notify`` so that the
guardrail against raw Qt signal emissions (see ``qt_compat``) only ever finds Qt signals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Event"]

log = logging.getLogger(__name__)


class Event:
    """Observers of one kind of change; ``notify(*args)`` calls each of them in connection order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def notify(self, *args: Any) -> None:
        # A copy: an observer may connect or disconnect while being notified.
        for callback in list(self._callbacks):
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self._callbacks)} observers)"
