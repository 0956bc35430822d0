"""The rules that keep the AI quiet on films it was not made for (issue 13, section 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from inference.loading import load_image
from inference.paths import sample_files
from inference.scope import dicom_scope_reasons, pixel_scope_reasons, scope_reasons
from tests.dicom_factory import make_dicom

VET_DICOM = (
    Path(__file__).resolve().parents[2]
    / "shared/data/dicom/15_vet_highdicom_DX_thorax-lateral_MONO1_8bit_ExplicitLE.dcm"
)


def _film(rows: int = 64) -> np.ndarray:
    """A 12-bit image with the spread of a real film."""
    y, x = np.mgrid[0:rows, 0:rows]
    return (200 + 3000 * (x + y) / (2 * rows)).astype(np.uint16)


def _reasons(tmp_path: Path, **kwargs) -> list[str]:
    make_dicom(tmp_path / "f.dcm", _film(), bits_stored=12, **kwargs)
    return dicom_scope_reasons(load_image(tmp_path / "f.dcm").meta)


def test_a_frontal_human_chest_dicom_is_in_scope(tmp_path: Path) -> None:
    assert _reasons(tmp_path, view_position="PA", extra={"BodyPartExamined": "CHEST"}) == []


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_shipped_sample_is_in_scope(path: Path) -> None:
    assert scope_reasons(load_image(path)) == []


@pytest.mark.parametrize("view", ["LL", "RL", "LAT"])
def test_a_lateral_view_is_out_of_scope(tmp_path: Path, view: str) -> None:
    [reason] = _reasons(tmp_path, view_position=view)
    assert f"View Position {view}" in reason and "frontal" in reason


@pytest.mark.parametrize(
    "extra",
    [
        {"PatientSpeciesDescription": "Canis lupus familiaris"},
        {"PatientBreedDescription": "Beagle"},
        {"ResponsiblePerson": "Owner^Anne"},
    ],
    ids=["species", "breed", "owner"],
)
def test_an_animal_is_out_of_scope(tmp_path: Path, extra: dict) -> None:
    [reason] = _reasons(tmp_path, extra=extra)
    assert "animal" in reason and next(iter(extra)) in reason


def test_a_species_code_sequence_marks_an_animal(tmp_path: Path) -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "448771007", "SCT", "Canis lupus familiaris"
    [reason] = _reasons(tmp_path, extra={"PatientSpeciesCodeSequence": Sequence([code])})
    assert "PatientSpeciesCodeSequence" in reason


def test_an_empty_species_sequence_says_nothing(tmp_path: Path) -> None:
    assert _reasons(tmp_path, extra={"PatientSpeciesCodeSequence": Sequence([])}) == []


def test_veterinary_wording_marks_an_animal_and_a_lateral_view(tmp_path: Path) -> None:
    reasons = _reasons(
        tmp_path, view_position="", extra={"AcquisitionDeviceProcessingDescription": "CANINE LATERAL THORAX"}
    )
    assert len(reasons) == 2
    assert "'CANINE'" in reasons[0] and "lateral view" in reasons[1]


def test_words_inside_other_words_do_not_count(tmp_path: Path) -> None:
    assert _reasons(tmp_path, study_description="CHEST PA CATHETER CHECK") == []


@pytest.mark.parametrize(("part", "in_scope"), [("KNEE", False), ("SKULL", False), ("CHEST", True), ("thorax", True)])
def test_body_part_examined(tmp_path: Path, part: str, in_scope: bool) -> None:
    reasons = _reasons(tmp_path, extra={"BodyPartExamined": part})
    assert (reasons == []) == in_scope
    if not in_scope:
        assert f"Body Part Examined is {part}" in reasons[0]


@pytest.mark.parametrize(("modality", "in_scope"), [("CT", False), ("MR", False), ("CR", True), ("OT", True)])
def test_modality(tmp_path: Path, modality: str, in_scope: bool) -> None:
    reasons = _reasons(tmp_path, modality=modality)
    assert (reasons == []) == in_scope
    if not in_scope:
        assert f"Modality {modality}" in reasons[0]


@pytest.mark.skipif(not VET_DICOM.exists(), reason="needs ../shared/data/dicom")
def test_the_real_veterinary_dicom_is_out_of_scope() -> None:
    reasons = dicom_scope_reasons(load_image(VET_DICOM).meta)
    assert any("animal" in r for r in reasons) and any("lateral" in r for r in reasons)


def test_a_flat_image_is_out_of_scope() -> None:
    assert "single flat value" in pixel_scope_reasons(np.full((50, 50), 700, np.uint16), 12)[0]


def test_a_flat_field_with_noise_is_out_of_scope() -> None:
    noise = np.random.default_rng(0).integers(-1, 2, (80, 80))
    assert "nearly uniform" in pixel_scope_reasons((128 + noise).astype(np.uint8), 8)[0]


def test_non_finite_pixels_are_out_of_scope() -> None:
    pixels = _film().astype(np.float32)
    pixels[3, 4] = np.nan
    assert "not numbers" in pixel_scope_reasons(pixels)[0]


def test_a_film_with_a_burned_in_white_label_is_in_scope() -> None:
    # 16-bit file, body in the low range, a label at full white: spread judged on the stored values.
    pixels = (_film(100) // 2).astype(np.uint16)
    pixels[:4, :20] = 65535
    assert pixel_scope_reasons(pixels, 16) == []
