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

__all__ = [
    "NO_AI_RESULT",
    "SORT_KEYS",
    "WorklistEntry",
    "WorklistFilter",
    "Group",
    "arrange",
    "entry_of",
    "film_order",
    "filter_entries",
    "prior_of",
    "sort_entries",
]


# What a film the model abstained on is filed under (inference.predictor.NO_AI_RESULT; that module
# imports TensorFlow, so the text is repeated here and a test keeps the two equal).
NO_AI_RESULT = "No AI result"


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
    position: int = 0  # where the film came in the opening order
    badge: str = ""  # what the AI column says ("Pneumonia 91%", "No AI result", "…", "failed")
    reader_class: str | None = None
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
    "opened": lambda e: e.position,
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
            label = NO_AI_RESULT if e.abstained else e.ai_label
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


def film_order(groups: Sequence[Group]) -> list[int]:
    """The doc ids of the arranged films in the order the list shows them (Up/Down follow it)."""
    ids: list[int] = []
    for group in groups:
        ids.extend(film_order(group.children))
        ids.extend(e.doc_id for e in group.entries)
    return ids


def entry_of(doc: Any, verdict: Any = None, position: int = 0, badge: str = "") -> WorklistEntry:
    """The worklist's view of an opened film (a :class:`viewer.document.ImageDocument`) and the
    reader's :class:`~inference.verdict.Verdict` (or None): patient and study from DICOM, the AI
    result from the document's prediction."""
    from inference.dicom_text import dicom_date, person_name

    meta = doc.meta
    patient = meta.patient.get("PatientID", "") or person_name(meta.patient.get("PatientName", ""))
    study = meta.study.get("StudyInstanceUID", "")
    date = meta.study.get("StudyDate", "")
    label = " · ".join(p for p in (dicom_date(date), meta.study.get("StudyDescription", "")) if p)
    p = doc.prediction
    abstained = bool(p is not None and p.abstained)
    return WorklistEntry(
        doc_id=doc.doc_id,
        file_name=doc.name,
        patient=patient.strip(),
        study=study,
        study_date=date,
        study_label=label or study,
        ai_label=None if p is None or abstained else p.label,
        ai_probability=None if p is None or abstained else float(p.confidence),
        abstained=abstained,
        warning=bool(p is not None and p.lung_warning),
        read=bool(verdict is not None and verdict.is_read),
        agreement=None if verdict is None else verdict.agreement,
        position=position,
        badge=badge,
        reader_class=None if verdict is None else verdict.reader_class,
    )


def prior_of(entries: Iterable[WorklistEntry], doc_id: int) -> int | None:
    """The film to compare ``doc_id`` with: of the same patient, from the most recent other study
    (latest study date; undated studies last); a film of the same study when there is no other.
    None when the film has no patient or the patient has no other film."""
    items = list(entries)
    this = next((e for e in items if e.doc_id == doc_id), None)
    if this is None or not this.patient:
        return None
    same = [e for e in items if e.patient == this.patient and e.doc_id != doc_id]
    others = [e for e in same if e.study != this.study] or same
    if not others:
        return None
    return max(others, key=lambda e: (e.study_date or "", -e.position)).doc_id
