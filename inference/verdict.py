"""The reader's own verdict on a film: the AI is a second reader, the radiologist has the last word.

Stored in the film's sidecar (:mod:`inference.sidecar`) beside the annotations, carried by
every export (CSV/JSON columns, the PDF's Reader section, the structured report), and the
labels an adaptation of the model learns from (the reader's class, never the AI's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

__all__ = ["READER_CLASSES", "AGREEMENTS", "Verdict", "agreement_of"]

# What a reader can conclude; the first three are the model's classes.
READER_CLASSES = ("COVID-19", "Normal", "Pneumonia", "Other finding", "Not assessable")
AGREEMENTS = ("agree", "disagree")
_MAX_TEXT = 4000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def agreement_of(reader_class: str | None, ai_label: str | None) -> str | None:
    """ "agree"/"disagree" when both the reader and the AI named a class, else None."""
    if reader_class is None or ai_label is None:
        return None
    return "agree" if reader_class == ai_label else "disagree"


@dataclass(frozen=True)
class Verdict:
    """One reader's verdict on one film. ``ai_label`` and ``ai_model`` record what the AI said then."""

    reader_class: str | None = None
    agreement: str | None = None
    impression: str = ""
    reader: str = ""
    time: str = ""
    ai_label: str | None = None
    ai_model: str = ""

    def __post_init__(self) -> None:
        if self.reader_class is not None and self.reader_class not in READER_CLASSES:
            raise ValueError(f"reader class must be one of {', '.join(READER_CLASSES)}, not {self.reader_class!r}")
        if self.agreement is not None and self.agreement not in AGREEMENTS:
            raise ValueError(f"agreement must be 'agree' or 'disagree', not {self.agreement!r}")
        object.__setattr__(self, "impression", str(self.impression)[:_MAX_TEXT])
        object.__setattr__(self, "reader", str(self.reader)[:200])

    @property
    def is_read(self) -> bool:
        return self.reader_class is not None or self.agreement is not None

    # -- what the keys do: each returns the new verdict, stamped with the reader and the time -----
    def agree(self, ai_label: str | None, reader: str, ai_model: str = "") -> Verdict:
        """The reader agrees with the AI: the AI's class becomes the reader's (none when it abstained)."""
        return replace(
            self, agreement="agree", reader_class=ai_label or self.reader_class, **_stamp(reader, ai_label, ai_model)
        )

    def disagree(self, ai_label: str | None, reader: str, ai_model: str = "") -> Verdict:
        keep = self.reader_class if self.reader_class != ai_label else None
        return replace(self, agreement="disagree", reader_class=keep, **_stamp(reader, ai_label, ai_model))

    def with_class(self, reader_class: str, ai_label: str | None, reader: str, ai_model: str = "") -> Verdict:
        agreement = agreement_of(reader_class, ai_label) if reader_class in READER_CLASSES[:3] else "disagree"
        if ai_label is None:
            agreement = None
        stamp = _stamp(reader, ai_label, ai_model)
        return replace(self, reader_class=reader_class, agreement=agreement, **stamp)

    def with_ai_result(self, ai_label: str | None, ai_model: str) -> Verdict:
        """A class the reader gave before the AI answered, completed when the answer comes: the AI's
        class, its model and the agreement are recorded; the reader's class and time stay as they were.
        A verdict that already records an AI answer (or has no class yet) is returned unchanged."""
        if self.ai_model or self.reader_class is None or self.agreement is not None or not ai_model:
            return self
        agreement = None
        if ai_label is not None:
            agreement = (
                agreement_of(self.reader_class, ai_label) if self.reader_class in READER_CLASSES[:3] else "disagree"
            )
        return replace(self, ai_label=ai_label, ai_model=ai_model, agreement=agreement)

    def with_impression(self, text: str, reader: str) -> Verdict:
        return replace(self, impression=text, reader=reader or self.reader, time=_now())

    def to_dict(self) -> dict[str, Any]:
        return {
            "reader_class": self.reader_class,
            "agreement": self.agreement,
            "impression": self.impression,
            "reader": self.reader,
            "time": self.time,
            "ai_label": self.ai_label,
            "ai_model": self.ai_model,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Verdict:
        if not isinstance(data, dict):
            raise ValueError("a verdict must be a JSON object")

        def text(key: str) -> str:
            value = data.get(key)
            return "" if value is None else str(value)

        return cls(
            reader_class=data.get("reader_class"),
            agreement=data.get("agreement"),
            impression=text("impression"),
            reader=text("reader"),
            time=text("time"),
            ai_label=data.get("ai_label"),
            ai_model=text("ai_model"),
        )


def _stamp(reader: str, ai_label: str | None, ai_model: str) -> dict[str, Any]:
    return {"reader": reader, "time": _now(), "ai_label": ai_label, "ai_model": ai_model}
