"""The worklist: which films to read first, as plain data (no Qt; the image list shows it).

One :class:`WorklistEntry` per opened film, built from what is known about it (file, DICOM
patient and study, the AI result, the reader's verdict). :func:`arrange` filters, sorts and
groups them by patient and study; the Qt model only displays the result, so a few thousand
films sort in milliseconds and the rules are tested without a display.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SORT_KEYS", "WorklistEntry", "WorklistFilter", "Group", "arrange", "filter_entries", "sort_entries"]


@dataclass(frozen=True)
class WorklistEntry:
    doc_id: int
    file_name: str
    patient: str = ""  # what identifies the patient on this workstation (ID, else name); "" for PNG/JPEG
    study: str = ""  # Study Instance UID
    study_date: str = ""  # YYYYMMDD
    study_label: str = ""  # date and description, for the group row
    ai_label: str | None = None  # None: not predicted yet, or abstained
    ai_probability: float | None = None  # of the AI's class
    abstained: bool = False
    warning: bool = False
    read: bool = False
    agreement: str | None = None  # "agree" / "disagree"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _attention(e: WorklistEntry) -> tuple:
    """Most urgent first: unread before read, then disagreements, abstentions and warnings, then
    the AI's non-normal calls by probability."""
    abnormal = e.ai_label is not None and e.ai_label != "Normal"
    return (
        e.read,
        e.agreement != "disagree",
        not (e.abstained or e.warning),
        not abnormal,
        -(e.ai_probability or 0.0),
        e.file_name.lower(),
    )


# Sort key name -> key function. None values sort last whatever the direction.
SORT_KEYS: dict[str, Callable[[WorklistEntry], Any]] = {
    "attention": _attention,
    "file": lambda e: e.file_name.lower(),
    "ai_class": lambda e: e.ai_label,
    "probability": lambda e: e.ai_probability,
    "abstained": lambda e: (e.abstained, e.warning),
    "read": lambda e: e.read,
    "agreement": lambda e: e.agreement,
    "patient": lambda e: e.patient.lower() or None,
    "study_date": lambda e: e.study_date or None,
}


@dataclass(frozen=True)
class WorklistFilter:
    ai_classes: frozenset[str] | None = None  # None: any; may include "No AI result"
    read: bool | None = None
    agreement: str | None = None  # "agree", "disagree" or None for any
    flagged_only: bool = False  # abstained or warned
    text: str = ""  # in the file name or the patient

    def accepts(self, e: WorklistEntry) -> bool:
        if self.ai_classes is not None:
            label = "No AI result" if e.abstained else e.ai_label
            if label not in self.ai_classes:
                return False
        if self.read is not None and e.read != self.read:
            return False
        if self.agreement is not None and e.agreement != self.agreement:
            return False
        if self.flagged_only and not (e.abstained or e.warning):
            return False
        needle = self.text.strip().lower()
        return not needle or needle in e.file_name.lower() or needle in e.patient.lower()


def filter_entries(entries: Iterable[WorklistEntry], rule: WorklistFilter) -> list[WorklistEntry]:
    return [e for e in entries if rule.accepts(e)]


def sort_entries(
    entries: Iterable[WorklistEntry], key: str = "attention", descending: bool = False
) -> list[WorklistEntry]:
    """Stable sort by ``key``; entries whose value is None go last in both directions."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}; choose from {', '.join(SORT_KEYS)}")
    fn = SORT_KEYS[key]
    items = list(entries)
    known = [e for e in items if fn(e) is not None]
    unknown = [e for e in items if fn(e) is None]
    known.sort(key=fn, reverse=descending)
    return known + unknown


@dataclass
class Group:
    """A patient (with studies) or a study (with films) in the worklist tree."""

    label: str
    key: str
    children: list[Group] = field(default_factory=list)
    entries: list[WorklistEntry] = field(default_factory=list)

    def count(self) -> int:
        return len(self.entries) + sum(child.count() for child in self.children)


def arrange(
    entries: Sequence[WorklistEntry],
    rule: WorklistFilter | None = None,
    key: str = "attention",
    descending: bool = False,
    group: bool = True,
) -> list[Group]:
    """Filter, sort, then group by patient and study when DICOM names them.

    Films without a patient (PNG, JPEG) stay at the top level in one ungrouped group (``key ""``).
    Groups keep the order of their first film, so the most urgent patient comes first.
    """
    ordered = sort_entries(filter_entries(entries, rule or WorklistFilter()), key, descending)
    if not group:
        return [Group("", "", entries=ordered)]
    patients: dict[str, Group] = {}
    loose = Group("Other files", "")
    top: list[Group] = []
    for e in ordered:
        if not e.patient:
            if not loose.entries:
                top.append(loose)
            loose.entries.append(e)
            continue
        patient = patients.get(e.patient)
        if patient is None:
            patient = patients[e.patient] = Group(e.patient, e.patient)
            top.append(patient)
        study_key = e.study or "(no study)"
        study = next((s for s in patient.children if s.key == study_key), None)
        if study is None:
            study = Group(e.study_label or e.study_date or study_key, study_key)
            patient.children.append(study)
        study.entries.append(e)
    return top
