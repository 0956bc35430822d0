"""Worklist sorting, filtering and grouping without a display (issue 15)."""

from __future__ import annotations

import pytest

from viewer.worklist import WorklistEntry, WorklistFilter, arrange, filter_entries, sort_entries


def _e(i: int, **kw) -> WorklistEntry:
    return WorklistEntry(doc_id=i, file_name=kw.pop("file_name", f"f{i:03d}.dcm"), **kw)


ENTRIES = [
    _e(0, ai_label="Normal", ai_probability=0.95, read=True, agreement="agree", patient="P1", study="S1"),
    _e(1, ai_label="COVID-19", ai_probability=0.70, patient="P1", study="S2", study_date="20260101"),
    _e(2, ai_label="Pneumonia", ai_probability=0.90, patient="P2", study="S3"),
    _e(3, abstained=True, patient="P2", study="S3"),
    _e(4, ai_label="COVID-19", ai_probability=0.99, read=True, agreement="disagree"),
    _e(5, file_name="a.png"),  # not predicted yet
]


def test_attention_order_puts_unread_flagged_and_abnormal_first() -> None:
    order = [e.doc_id for e in sort_entries(ENTRIES, "attention")]
    assert order == [3, 2, 1, 5, 4, 0]


def test_sorting_by_probability_puts_unknown_last_in_both_directions() -> None:
    assert [e.doc_id for e in sort_entries(ENTRIES, "probability", descending=True)][:3] == [4, 0, 2]
    assert [e.doc_id for e in sort_entries(ENTRIES, "probability")][-2:] == [3, 5]
    assert [e.doc_id for e in sort_entries(ENTRIES, "probability", descending=True)][-2:] == [3, 5]
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_entries(ENTRIES, "size")


def test_filters() -> None:
    ids = lambda rule: [e.doc_id for e in filter_entries(ENTRIES, rule)]  # noqa: E731
    assert ids(WorklistFilter(ai_classes=frozenset({"COVID-19"}))) == [1, 4]
    assert ids(WorklistFilter(ai_classes=frozenset({"No AI result"}))) == [3]
    assert ids(WorklistFilter(read=False)) == [1, 2, 3, 5]
    assert ids(WorklistFilter(agreement="disagree")) == [4]
    assert ids(WorklistFilter(flagged_only=True)) == [3]
    assert ids(WorklistFilter(text="A.PNG")) == [5]
    assert ids(WorklistFilter(text="p2")) == [2, 3]


def test_grouping_by_patient_and_study() -> None:
    groups = arrange(ENTRIES)
    assert [g.label for g in groups] == ["P2", "P1", "Other files"]
    p2, p1, other = groups
    assert [s.key for s in p1.children] == ["S2", "S1"] and p1.count() == 2
    assert [e.doc_id for e in p2.children[0].entries] == [3, 2]
    assert [e.doc_id for e in other.entries] == [5, 4]
    assert [e.doc_id for e in arrange(ENTRIES, group=False)[0].entries] == [3, 2, 1, 5, 4, 0]
