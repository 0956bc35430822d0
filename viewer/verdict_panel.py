"""The reader's verdict: a panel that shows the AI's result beside the reader's own, and the keys.

The AI is a second reader: its box (dashed, muted) says what the model said; the reader's box
(solid) holds the verdict: agree / disagree, the reader's class, a free-text impression, the
reader's name and the time. The rules are :class:`inference.verdict.Verdict`'s; the verdict is
stored through :class:`viewer.reads.Reads` (the film's sidecar, saved at once), never here.

Keys (rows of :data:`viewer.shortcuts.SHORTCUTS`, group "Reading"): Y agree, N disagree,
F5-F9 the reader's class, F4 the impression field, U the next unread film. None of them acts
while the focus is in a text field (the impression, the reader's name, the worklist's filter):
there the keys type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from inference.verdict import READER_CLASSES, Verdict
from viewer.document import ImageDocument
from viewer.qt_compat import emit
from viewer.theme import MUTED, class_colour

__all__ = ["VerdictPanel", "VerdictController", "CLASS_ACTIONS", "install_verdict", "is_typing"]

# Action id (viewer.shortcuts) -> reader class.
CLASS_ACTIONS = dict(
    zip(("reader_covid", "reader_normal", "reader_pneumonia", "reader_other", "reader_not_assessable"), READER_CLASSES)
)
CLASS_KEYS = dict(zip(READER_CLASSES, ("F5", "F6", "F7", "F8", "F9")))
NOTHING_TO_AGREE = "The AI gave no result for this film: there is nothing to {what}. Choose your class (F5–F9)."
NO_RESULT_YET = "The AI has not answered for this film yet: choose your class (F5–F9), or wait for its result."


def is_typing() -> bool:
    """True while the keyboard focus is in a text field (the verdict keys then type, not act)."""
    return isinstance(QApplication.focusWidget(), (QLineEdit, QPlainTextEdit, QTextEdit))


def _time_text(iso: str) -> str:
    return iso.replace("T", " ")[:16] + (" UTC" if iso.endswith("+00:00") else "") if iso else ""


class _ImpressionEdit(QPlainTextEdit):
    """The impression field: Esc or Ctrl+Enter hands the keyboard back (and the text is stored)."""

    done = Signal()

    def event(self, event: QEvent) -> bool:
        override = event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent)
        if override and event.key() == Qt.Key.Key_Escape:  # not the window's "reset view" while typing
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if event.key() == Qt.Key.Key_Escape or (ctrl and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)):
            emit(self.done)
            return
        super().keyPressEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().focusOutEvent(event)
        emit(self.done)


class VerdictPanel(QWidget):
    """The AI box and the reader's box. Buttons say what the reader clicked; the controller decides."""

    agree_clicked = Signal()
    disagree_clicked = Signal()
    class_clicked = Signal(str)
    impression_done = Signal(str)
    reader_edited = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ai_box = QFrame()
        self.ai_box.setObjectName("ai_verdict_box")
        self.ai_box.setStyleSheet(
            "#ai_verdict_box { border: 1px dashed #5f6b79; border-radius: 6px; background: #161c24; }"
        )
        ai_title = QLabel("AI (second reader)")
        ai_title.setStyleSheet(f"color: {MUTED}; font-size: 11px;")
        self.ai_text = QLabel("No image")
        self.ai_text.setWordWrap(True)
        ai_layout = QVBoxLayout(self.ai_box)
        ai_layout.setContentsMargins(8, 6, 8, 6)
        ai_layout.addWidget(ai_title)
        ai_layout.addWidget(self.ai_text)

        self.reader_box = QFrame()
        self.reader_box.setObjectName("reader_verdict_box")
        self.reader_box.setStyleSheet(
            "#reader_verdict_box { border: 2px solid #4ea1ff; border-radius: 6px; background: #1d2733; }"
        )
        reader_title = QLabel("Your verdict")
        reader_title.setStyleSheet("color: #4ea1ff; font-weight: bold;")
        self.state = QLabel("Unread")
        self.state.setWordWrap(True)
        self.agree_button = QPushButton("Agree (Y)")
        self.disagree_button = QPushButton("Disagree (N)")
        self.agree_button.clicked.connect(lambda: emit(self.agree_clicked))
        self.disagree_button.clicked.connect(lambda: emit(self.disagree_clicked))
        for button in (self.agree_button, self.disagree_button):
            button.setCheckable(True)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        agree_row = QHBoxLayout()
        agree_row.addWidget(self.agree_button)
        agree_row.addWidget(self.disagree_button)
        self.class_buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, name in enumerate(READER_CLASSES):
            button = QPushButton(f"{name} ({CLASS_KEYS[name]})")
            button.setCheckable(True)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _checked=False, n=name: emit(self.class_clicked, n))
            self.class_buttons[name] = button
            grid.addWidget(button, i // 2, i % 2)
        self.impression = _ImpressionEdit()
        self.impression.setPlaceholderText("Impression (F4 to type; Esc or Ctrl+Enter when done)")
        self.impression.setFixedHeight(72)
        self.impression.done.connect(lambda: emit(self.impression_done, self.impression.toPlainText()))
        self.reader_edit = QLineEdit()
        self.reader_edit.setPlaceholderText("Your name (stamped on each verdict)")
        self.reader_edit.editingFinished.connect(lambda: emit(self.reader_edited, self.reader_edit.text()))
        self.time_label = QLabel("")
        self.time_label.setStyleSheet(f"color: {MUTED};")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #f0b429;")
        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Reader"))
        name_row.addWidget(self.reader_edit, 1)
        reader_layout = QVBoxLayout(self.reader_box)
        reader_layout.setContentsMargins(8, 6, 8, 6)
        reader_layout.addWidget(reader_title)
        reader_layout.addWidget(self.state)
        reader_layout.addLayout(agree_row)
        reader_layout.addLayout(grid)
        reader_layout.addWidget(self.impression)
        reader_layout.addLayout(name_row)
        reader_layout.addWidget(self.time_label)
        reader_layout.addWidget(self.note)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.ai_box)
        layout.addWidget(self.reader_box)
        layout.addStretch(1)
        self.show_verdict(None, None)

    def show_ai(self, text: str, class_name: str | None) -> None:
        colour = class_colour(class_name) if class_name else MUTED
        self.ai_text.setText(text)
        self.ai_text.setStyleSheet(f"color: {colour};")

    def show_verdict(self, doc_name: str | None, verdict: Verdict | None, new_film: bool = False) -> None:
        """Show ``verdict``; the impression text is left alone while the reader types in it,
        unless another film came on screen (``new_film``)."""
        enabled = doc_name is not None
        for w in (self.agree_button, self.disagree_button, self.impression, *self.class_buttons.values()):
            w.setEnabled(enabled)
        v = verdict or Verdict()
        self.agree_button.setChecked(v.agreement == "agree")
        self.disagree_button.setChecked(v.agreement == "disagree")
        for name, button in self.class_buttons.items():
            button.setChecked(v.reader_class == name)
        if not v.is_read:
            self.state.setText("Unread: no verdict yet" if enabled else "No image")
        else:
            mark = {"agree": "Agrees with the AI", "disagree": "Disagrees with the AI"}.get(v.agreement or "", "")
            self.state.setText(" · ".join(p for p in (mark, v.reader_class or "class not given") if p))
        if (new_film or not self.impression.hasFocus()) and self.impression.toPlainText() != v.impression:
            self.impression.setPlainText(v.impression)
        who = f"by {v.reader}" if v.reader else ""
        self.time_label.setText(" ".join(p for p in (who, _time_text(v.time)) if p))

    def set_note(self, text: str) -> None:
        self.note.setText(text)


class VerdictController:
    """Keys and buttons -> verdicts of the film on screen, through ``reads``; the panel follows.

    ``ask_name()`` asks the reader's name (once, when the setting is empty); tests pass their own.
    """

    def __init__(
        self,
        session: Any,
        reads: Any,
        settings: Any,
        panel: VerdictPanel,
        ask_name: Callable[[], str] | None = None,
        status: Callable[[str], object] | None = None,
    ) -> None:
        self.session, self.reads, self.settings, self.panel = session, reads, settings, panel
        self._ask_name = ask_name or self._dialog_name
        self._status = status or (lambda _text: None)
        self._asked = False
        self._shown: ImageDocument | None = None
        panel.reader_edit.setText(settings.reader_name)
        panel.agree_clicked.connect(self.agree)
        panel.disagree_clicked.connect(self.disagree)
        panel.class_clicked.connect(self.set_class)
        panel.impression_done.connect(self.commit_impression)
        panel.reader_edited.connect(self._reader_edited)
        ev = session.events
        ev.current_changed.connect(self._current_changed)
        ev.result_changed.connect(self._ai_answered)
        ev.model_changed.connect(lambda _status: self.refresh())
        reads.events.verdict_changed.connect(lambda doc: doc is session.current and self.refresh())
        self.refresh()

    # -- the reader -----------------------------------------------------------------------------
    def reader(self) -> str:
        name = self.settings.reader_name
        if not name and not self._asked:
            self._asked = True  # asked once; the field in the panel changes it later
            name = (self._ask_name() or "").strip()
            if name:
                self.settings.reader_name = name
                self.panel.reader_edit.setText(self.settings.reader_name)
        return self.settings.reader_name

    def _dialog_name(self) -> str:
        text, ok = QInputDialog.getText(
            self.panel, "Reader's name", "Your name, stamped on each verdict (change it in the verdict panel):"
        )
        return text if ok else ""

    def _reader_edited(self, name: str) -> None:
        self.settings.reader_name = name

    # -- what the AI said -------------------------------------------------------------------------
    @staticmethod
    def ai_label(doc: ImageDocument) -> str | None:
        p = doc.prediction
        return None if p is None or p.abstained else p.label

    @staticmethod
    def ai_model(doc: ImageDocument) -> str:
        p = doc.prediction
        return "" if p is None else f"{p.model_name} {p.model_version}".strip()

    def _ai_answered(self, doc: ImageDocument) -> None:
        """A verdict given before the AI answered gets the AI's class and the agreement now."""
        verdict = self.reads.verdict(doc) if doc.prediction is not None else None
        if verdict is not None:
            completed = verdict.with_ai_result(self.ai_label(doc), self.ai_model(doc))
            if completed is not verdict:
                self.reads.set_verdict(doc, completed)
        if doc is self.session.current:
            self.refresh()

    # -- the keys -----------------------------------------------------------------------------------
    def _verdict(self, doc: ImageDocument) -> Verdict:
        return self.reads.verdict(doc) or Verdict()

    def _say(self, text: str) -> None:
        self.panel.set_note(text)
        self._status(text)

    def agree(self) -> None:
        self._agreement("agree")

    def disagree(self) -> None:
        self._agreement("disagree")

    def _agreement(self, what: str) -> None:
        doc = self.session.current
        if doc is None:
            self.refresh()  # a click on a checkable button must not stay checked
            return
        label = self.ai_label(doc)
        if label is None:  # abstained or no result yet: nothing to agree or disagree with
            self._say(NO_RESULT_YET if doc.prediction is None else NOTHING_TO_AGREE.format(what=f"{what} with"))
            self.refresh(keep_note=True)
            return
        v = self._verdict(doc)
        rule = v.agree if what == "agree" else v.disagree
        self.reads.set_verdict(doc, rule(label, self.reader(), self.ai_model(doc)))
        self.refresh()

    def set_class(self, reader_class: str) -> None:
        doc = self.session.current
        if doc is None:
            self.refresh()
            return
        v = self._verdict(doc).with_class(reader_class, self.ai_label(doc), self.reader(), self.ai_model(doc))
        self.reads.set_verdict(doc, v)
        self.refresh()

    def commit_impression(self, text: str, doc: ImageDocument | None = None) -> None:
        """Store the impression typed for ``doc`` (default: the film on screen) if it changed."""
        doc = doc or self._shown
        if doc is None or self.session.document(doc.doc_id) is None:
            return
        v = self._verdict(doc)
        if text != v.impression:
            self.reads.set_verdict(doc, v.with_impression(text, self.reader()))

    def focus_impression(self) -> None:
        if self.session.current is not None:
            self.panel.impression.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def leave_impression(self, canvas: QWidget) -> None:
        if self.panel.impression.hasFocus():
            canvas.setFocus(Qt.FocusReason.ShortcutFocusReason)

    # -- showing ----------------------------------------------------------------------------------
    def _current_changed(self, doc: ImageDocument | None) -> None:
        previous = self._shown
        if previous is not None and previous is not doc:
            self.commit_impression(self.panel.impression.toPlainText(), previous)
        self.refresh(new_film=True)

    def refresh(self, keep_note: bool = False, new_film: bool = False) -> None:
        doc = self.session.current
        self._shown = doc
        if not self.panel.reader_edit.hasFocus():
            self.panel.reader_edit.setText(self.settings.reader_name)
        if not keep_note:
            self.panel.set_note("")
        if doc is None:
            self.panel.show_ai("No image", None)
            self.panel.show_verdict(None, None, new_film)
            return
        p = doc.prediction
        if p is None:
            ai = "Analysing…" if self.session.model.state == "ready" else "No AI result yet"
            self.panel.show_ai(ai, None)
        elif p.abstained:
            self.panel.show_ai(f"{p.shown_label}: {p.abstain_reason}", None)
        else:
            from viewer.presenters import percent

            self.panel.show_ai(f"{p.label} {percent(p.confidence)} · {self.ai_model(doc)}", p.label)
        self.panel.show_verdict(doc.name, self.reads.verdict(doc), new_film)


def unless_typing(fn: Callable[[], object]) -> Callable[..., None]:
    """A key's handler that does nothing while the reader types in a text field."""

    def handler(*_args: object) -> None:
        if not is_typing():
            fn()

    return handler


def install_verdict(window: Any, ask_name: Callable[[], str] | None = None) -> VerdictController:
    """The verdict dock and the Reading keys of ``window`` (a :class:`viewer.main_window.MainWindow`)."""
    from viewer.actions import add_dock

    panel = VerdictPanel()
    window.verdict_panel = panel
    window.verdict_dock = add_dock(
        window, "Reader's verdict", panel, Qt.DockWidgetArea.RightDockWidgetArea, "verdict_dock"
    )
    window.splitDockWidget(window.results_dock, window.verdict_dock, Qt.Orientation.Vertical)
    status = lambda text: window.statusBar().showMessage(text, 8000)  # noqa: E731
    controller = VerdictController(window.session, window.reads, window.settings, panel, ask_name, status)
    window.verdict_controller = controller
    panel.impression.done.connect(lambda: controller.leave_impression(window.canvas))
    a = window.actions_by_id
    a["verdict_agree"].triggered.connect(unless_typing(controller.agree))
    a["verdict_disagree"].triggered.connect(unless_typing(controller.disagree))
    for action_id, name in CLASS_ACTIONS.items():
        a[action_id].triggered.connect(unless_typing(lambda n=name: controller.set_class(n)))
    a["impression"].triggered.connect(
        unless_typing(lambda: (window.verdict_dock.show(), controller.focus_impression()))
    )

    def next_unread() -> None:
        if not window.thumbnails_presenter.next_unread():
            status("Every film in the list has a verdict")

    a["next_unread"].triggered.connect(unless_typing(next_unread))
    return controller
