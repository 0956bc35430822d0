"""The adaptation loop's data and gate (issue 16)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.sidecar import Sidecar, SidecarStore
from inference.verdict import Verdict
from tests.dicom_factory import make_dicom
from training.adapt import gate, paired_bootstrap, samples_from_reads, split_local

CLASSES = ["COVID-19", "Normal", "Pneumonia"]


def _predictions(rng: np.random.Generator, y: np.ndarray, accuracy: float) -> np.ndarray:
    wrong = rng.random(len(y)) > accuracy
    return np.where(wrong, (y + rng.integers(1, 3, len(y))) % 3, y)


def test_a_clearly_better_model_passes_the_gate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    result = gate((y, _predictions(rng, y, 0.6), _predictions(rng, y, 0.85)), n_classes=3)
    assert result.accept
    assert result.figures["check"]["ci95"][0] > 0
    assert "better beyond its uncertainty" in result.reasons[0]


def test_a_gain_within_the_noise_is_refused() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    current = _predictions(rng, y, 0.7)
    new = current.copy()
    new[:2] = y[:2]  # two more right answers out of 40: not beyond the uncertainty
    delta, lo, hi = paired_bootstrap(y, current, new, n_classes=3)
    assert delta >= 0 and lo <= 0 <= hi
    assert not gate((y, current, new), n_classes=3).accept


def test_forgetting_beyond_the_tolerance_is_refused() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    check = (y, _predictions(rng, y, 0.6), _predictions(rng, y, 0.9))
    ref_y = rng.integers(0, 3, 300)
    reference = (ref_y, _predictions(rng, ref_y, 0.9), _predictions(rng, ref_y, 0.8))
    result = gate(check, n_classes=3, reference=reference, tolerance=0.02)
    assert not result.accept and "worse than the tolerance" in result.reasons[1]


def test_reads_become_samples_with_the_readers_class(tmp_path: Path) -> None:
    store = SidecarStore(tmp_path / "reads")
    films = []
    for i, (reader_class, ai) in enumerate(
        [("Pneumonia", "COVID-19"), ("Normal", "Normal"), ("Other finding", "Normal")]
    ):
        path = tmp_path / f"f{i}.png"
        cv2.imwrite(str(path), np.full((16, 16), 40 * i, np.uint8))
        films.append(path)
        verdict = Verdict().with_class(reader_class, ai, reader="Dr A")
        store.save(Sidecar(f"sha256-{i:064d}", file=str(path), verdict=verdict))
    dicom = tmp_path / "d.dcm"
    make_dicom(dicom, np.zeros((16, 16), np.uint16), patient_id="PAT-7")
    store.save(Sidecar("sop-1.2.3", file=str(dicom), verdict=Verdict().agree("COVID-19", reader="Dr A")))
    store.save(Sidecar("sop-1.2.4", file=str(tmp_path / "gone.dcm"), verdict=Verdict().agree("Normal", "Dr A")))

    samples, skipped = samples_from_reads(store, CLASSES)
    by_path = {s.path.name: s for s in samples}
    assert by_path["f0.png"].label == "Pneumonia"  # the reader's class, not the AI's
    assert by_path["d.dcm"].label == "COVID-19" and by_path["d.dcm"].patient_id == "PAT-7"
    assert "f2.png" not in by_path and len(samples) == 3
    reasons = " ".join(r for _p, r in skipped)
    assert "Other finding" in reasons and "no longer where it was read" in reasons


def test_the_check_set_holds_whole_patients_and_at_least_a_fifth() -> None:
    from training.samples import Sample

    samples = [Sample(Path(f"p{i}_{j}.png"), CLASSES[i % 3], patient_id=f"p{i}") for i in range(60) for j in range(2)]
    splits = split_local(samples, check_fraction=0.25)
    check_patients = {s.patient_id for s in splits["test"]}
    trained = {s.patient_id for s in splits["train"] + splits["val"]}
    assert not check_patients & trained
    assert len(splits["test"]) >= 0.2 * len(samples)
    with pytest.raises(ValueError, match="at least 20%"):
        split_local(samples, check_fraction=0.1)
