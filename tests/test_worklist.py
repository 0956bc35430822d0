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


def test_opened_order_and_the_film_order_of_groups() -> None:
    from viewer.worklist import film_order

    shuffled = [_e(i, position=p) for i, p in ((0, 2), (1, 0), (2, 1))]
    assert [e.doc_id for e in sort_entries(shuffled, "opened")] == [1, 2, 0]
    groups = arrange(ENTRIES, key="attention")
    assert film_order(groups) == [3, 2, 1, 0, 5, 4]  # P2's films, P1's studies in turn, then the loose files


def test_prior_is_the_most_recent_other_study_of_the_same_patient() -> None:
    from viewer.worklist import prior_of

    films = [
        _e(0, patient="P1", study="S-2019", study_date="20190101", position=0),
        _e(1, patient="P1", study="S-2021", study_date="20210101", position=1),
        _e(2, patient="P1", study="S-2020", study_date="20200101", position=2),
        _e(3, patient="P1", study="S-2021", study_date="20210101", position=3),
        _e(4, patient="P2", study="S-x", position=4),
        _e(5, patient="P2", study="S-x", position=5),
        _e(6, file_name="a.png", position=6),
    ]
    assert prior_of(films, 1) == 2  # not the same study's other film, not the oldest
    assert prior_of(films, 2) == 1
    assert prior_of(films, 0) == 1
    assert prior_of(films, 4) == 5  # only one study: the other film of it
    assert prior_of(films, 6) is None  # no patient
    assert prior_of(films[:1], 0) is None and prior_of(films, 99) is None


def test_entry_of_a_document_reads_dicom_the_prediction_and_the_verdict() -> None:
    from types import SimpleNamespace

    from inference.verdict import Verdict
    from viewer.worklist import entry_of

    meta = SimpleNamespace(
        patient={"PatientName": "Doe^Jane", "PatientID": ""},
        study={"StudyInstanceUID": "1.2.3", "StudyDate": "20210301", "StudyDescription": "CHEST PA"},
    )
    prediction = SimpleNamespace(abstained=False, label="Pneumonia", confidence=0.91, lung_warning="no lungs")
    doc = SimpleNamespace(doc_id=7, name="a.dcm", meta=meta, prediction=prediction)
    verdict = Verdict().with_class("Normal", "Pneumonia", "Dr A")
    e = entry_of(doc, verdict, position=3, badge="Pneumonia 91%")
    assert (e.patient, e.study, e.study_date, e.study_label) == (
        "Doe, Jane",
        "1.2.3",
        "20210301",
        "2021-03-01 · CHEST PA",
    )
    assert (e.ai_label, e.ai_probability, e.abstained, e.warning) == ("Pneumonia", 0.91, False, True)
    assert (e.read, e.agreement, e.reader_class, e.position) == (True, "disagree", "Normal", 3)
    no_result = SimpleNamespace(abstained=True, label="Normal", confidence=0.5, lung_warning=None)
    empty = SimpleNamespace(patient={}, study={})
    abstained = SimpleNamespace(doc_id=8, name="b.png", meta=empty, prediction=no_result)
    e = entry_of(abstained)
    assert (e.ai_label, e.ai_probability, e.abstained, e.read, e.patient) == (None, None, True, False, "")


def test_the_no_ai_result_filter_name_is_the_predictor_s() -> None:
    from inference.predictor import NO_AI_RESULT as PREDICTOR_TEXT
    from viewer.worklist import NO_AI_RESULT

    assert NO_AI_RESULT == PREDICTOR_TEXT
