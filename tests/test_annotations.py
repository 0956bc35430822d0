"""Measurements, the sidecar store and orientation markers, without a display (issue 14)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.annotations import (
    AP_CTR_NOTE,
    Annotation,
    measure,
    propose_ctr,
    roi_stats,
    spacing_of,
)
from inference.image import ImageMeta
from inference.loading import load_image
from inference.orientation import edge_markers, patient_orientation
from inference.sidecar import Sidecar, SidecarError, SidecarStore, film_key
from tests.dicom_factory import make_dicom

ROT_CW = ((0, -1), (1, 0))
FLIP_H = ((-1, 0), (0, 1))


def _meta(**kwargs) -> ImageMeta:
    return replace(ImageMeta(path="x.png", format="PNG", width=100, height=100, bits_stored=8), **kwargs)


def test_a_100_px_line_with_0_2_mm_spacing_reads_20_mm() -> None:
    meta = _meta(pixel_spacing=(0.2, 0.2), spacing_source="PixelSpacing")
    m = measure(Annotation("distance", ((10, 10), (110, 10))), np.zeros((200, 200)), meta)
    assert m.values["length"] == pytest.approx(20.0)
    assert m.text() == "20.0 mm"


def test_imager_pixel_spacing_is_labelled_at_the_detector_and_anisotropic_spacing_counts() -> None:
    meta = _meta(pixel_spacing=(0.1, 0.2), spacing_source="ImagerPixelSpacing")
    m = measure(Annotation("distance", ((0, 0), (30, 40))), np.zeros((50, 50)), meta)
    assert m.values["length"] == pytest.approx(math.hypot(30 * 0.2, 40 * 0.1))
    assert m.units["length"] == "mm at detector"


def test_without_spacing_lengths_are_in_pixels() -> None:
    m = measure(Annotation("distance", ((0, 0), (3, 4))), np.zeros((10, 10)), _meta())
    assert (m.values["length"], m.units["length"]) == (pytest.approx(5.0), "px")


def test_angles() -> None:
    right = measure(Annotation("angle", ((10, 0), (0, 0), (0, 10))), np.zeros((1, 1)), _meta())
    assert right.values["angle"] == pytest.approx(90.0)
    cobb = measure(
        Annotation("cobb", ((0, 0), (10, 0), (0, 5), (10, 5 + 10 * math.tan(math.radians(25))))), None, _meta()
    )
    assert cobb.values["angle"] == pytest.approx(25.0)
    # The direction a line was drawn in does not change a Cobb angle.
    reversed_ = measure(
        Annotation("cobb", ((10, 0), (0, 0), (0, 5), (10, 5 + 10 * math.tan(math.radians(25))))), None, _meta()
    )
    assert reversed_.values["angle"] == pytest.approx(25.0)


def test_a_rectangle_roi_over_a_known_patch_gives_its_mean_and_sd() -> None:
    rng = np.random.default_rng(3)
    pixels = np.zeros((100, 100), np.uint16)
    patch = rng.integers(1000, 2000, (20, 30)).astype(np.uint16)
    pixels[40:60, 10:40] = patch
    m = roi_stats(pixels, "rect", (10, 40), (40, 60), spacing_of(_meta(pixel_spacing=(0.5, 0.5))))
    assert m.values["mean"] == pytest.approx(patch.mean())
    assert m.values["sd"] == pytest.approx(patch.std(ddof=1))
    assert (m.values["min"], m.values["max"]) == (patch.min(), patch.max())
    assert m.values["area"] == pytest.approx(600 * 0.25) and m.units["area"] == "mm²"


def test_an_ellipse_roi_counts_the_pixels_inside_it() -> None:
    pixels = np.zeros((200, 200))
    yy, xx = np.mgrid[0:200, 0:200]
    inside = ((xx + 0.5 - 100) / 40) ** 2 + ((yy + 0.5 - 100) / 20) ** 2 <= 1
    pixels[inside] = 7.0
    m = roi_stats(pixels, "ellipse", (60, 80), (140, 120), spacing_of(_meta()))
    assert m.values["mean"] == 7.0 and m.values["sd"] == 0.0
    assert m.values["area"] == inside.sum()
    assert m.values["area"] == pytest.approx(math.pi * 40 * 20, rel=0.02)


def test_ctr_and_the_ap_warning() -> None:
    points = ((40, 60), (90, 60), (10, 40), (110, 40))
    pa = measure(Annotation("ctr", points), None, _meta(view_position="PA"))
    assert pa.values["ratio"] == pytest.approx(0.5) and pa.note == ""
    ap = measure(Annotation("ctr", points), None, _meta(view_position="AP"))
    assert ap.note == AP_CTR_NOTE and AP_CTR_NOTE in ap.text()


def test_ctr_is_proposed_from_two_lung_masks() -> None:
    visible = np.zeros((100, 120), bool)
    visible[20:80, 15:50] = True  # the lung on screen left
    visible[20:80, 70:105] = True
    visible[55:80, 40:50] = False  # the heart bulges into the left-of-screen lung's lower part
    c0, c1, t0, t1 = propose_ctr(visible)
    assert (t0[0], t1[0]) == (15, 105)
    assert (c0[0], c1[0]) == (40, 70) and c0[1] == c1[1] >= 55


def test_the_narrow_tip_of_a_costophrenic_angle_is_not_taken_for_the_heart() -> None:
    visible = np.zeros((100, 120), bool)
    visible[20:80, 15:50] = True
    visible[20:80, 70:105] = True
    visible[55:80, 40:50] = False  # the heart's border, 30 px apart
    visible[80:86, 15:22] = True  # the right costophrenic angle: a narrow tip below the heart
    visible[80:86, 70:105] = True  # the left lung base goes on lower
    c0, c1, _t0, _t1 = propose_ctr(visible)
    assert (c0[0], c1[0]) == (40, 70) and 55 <= c0[1] < 80  # not 22..70 at the tip's rows


def test_no_ctr_is_proposed_without_two_lungs() -> None:
    visible = np.zeros((50, 50), bool)
    visible[10:40, 5:20] = True
    assert propose_ctr(visible) is None


def test_bad_annotations_are_refused() -> None:
    with pytest.raises(ValueError, match="2 points"):
        Annotation("distance", ((0, 0),))
    with pytest.raises(ValueError, match="unknown"):
        Annotation("scribble", ((0, 0),))
    with pytest.raises(ValueError, match="finite"):
        Annotation("text", ((float("nan"), 0),), "x")


def test_sidecar_round_trip_and_identity_by_uid(tmp_path: Path) -> None:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    ds = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    make_dicom(tmp_path / "copy.dcm", pixels, bits_stored=12, extra={"SOPInstanceUID": ds.SOPInstanceUID})
    key = film_key(load_image(tmp_path / "a.dcm").meta)
    assert key == f"sop-{ds.SOPInstanceUID}"
    assert film_key(load_image(tmp_path / "copy.dcm").meta) == key  # another path, the same film

    store = SidecarStore(tmp_path / "reads")
    marks = [Annotation("distance", ((1, 2), (3, 4))), Annotation("text", ((5, 5),), "effusion?")]
    store.save(Sidecar(key, file=str(tmp_path / "a.dcm"), annotations=marks))
    back = store.load(key)
    assert back.annotations == marks and back.updated
    saved = json.loads(store.path_for(key).read_text())
    assert saved["format"] == "cxr-viewer-reads" and saved["annotations"][1]["text"] == "effusion?"


def test_png_identity_is_the_content_hash(tmp_path: Path) -> None:
    import cv2

    img = np.arange(400, dtype=np.uint8).reshape(20, 20)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    keys = {film_key(load_image(tmp_path / n).meta) for n in ("a.png", "b.png")}
    assert len(keys) == 1 and next(iter(keys)).startswith("sha256-")


def test_a_hostile_uid_cannot_leave_the_store(tmp_path: Path) -> None:
    meta = _meta(tags=(("(0008,0018)", "SOPInstanceUID", "UI", "../../etc/passwd"),), path=str(tmp_path / "f"))
    (tmp_path / "f").write_bytes(b"abc")
    assert film_key(meta).startswith("sha256-")
    with pytest.raises(SidecarError):
        SidecarStore(tmp_path).path_for("sop-../../x")


def test_a_damaged_sidecar_is_set_aside_not_overwritten(tmp_path: Path) -> None:
    store = SidecarStore(tmp_path)
    key = "sha256-" + "0" * 64
    store.path_for(key).write_text("{not json")
    with pytest.raises(SidecarError, match="could not be read"):
        store.load(key)
    assert [p.name.split(".damaged-")[0] for p in tmp_path.iterdir()] == [f"{key}.json"]
    assert store.load(key).is_empty


def test_orientation_markers_follow_rotation_and_flip() -> None:
    meta = _meta(tags=(("(0020,0020)", "PatientOrientation", "CS", "L\\F"),))
    po = patient_orientation(meta)
    assert edge_markers(po) == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    assert edge_markers(po, ROT_CW) == {"right": "H", "left": "F", "bottom": "L", "top": "R"}
    assert edge_markers(po, FLIP_H) == {"right": "R", "left": "L", "bottom": "F", "top": "H"}


def test_no_markers_when_the_file_does_not_say() -> None:
    assert edge_markers(patient_orientation(_meta())) == {}
    bad = _meta(tags=(("(0020,0020)", "PatientOrientation", "CS", "X\\Y"),))
    assert patient_orientation(bad) is None


def test_verdict_keys_and_agreement() -> None:
    from inference.verdict import Verdict

    v = Verdict().agree("Pneumonia", reader="Dr A", ai_model="cxr-default 1.1.0")
    assert (v.reader_class, v.agreement, v.reader, v.ai_label) == ("Pneumonia", "agree", "Dr A", "Pneumonia")
    assert v.time and v.is_read
    v = v.with_class("COVID-19", "Pneumonia", reader="Dr A")
    assert v.agreement == "disagree"
    assert v.with_class("Pneumonia", "Pneumonia", reader="Dr A").agreement == "agree"
    assert v.with_class("Other finding", "Normal", reader="Dr A").agreement == "disagree"
    assert Verdict().with_class("Normal", None, reader="Dr A").agreement is None  # the AI gave no result
    assert Verdict().disagree("Normal", reader="Dr A").reader_class is None
    with pytest.raises(ValueError, match="reader class"):
        Verdict(reader_class="Maybe")


def test_the_verdict_is_kept_in_the_sidecar(tmp_path: Path) -> None:
    from inference.verdict import Verdict

    store = SidecarStore(tmp_path)
    key = "sha256-" + "a" * 64
    verdict = Verdict().with_class("Pneumonia", "COVID-19", reader="Dr A").with_impression("RLL consolidation", "Dr A")
    store.save(Sidecar(key, verdict=verdict))
    assert store.load(key).verdict == verdict
    assert json.loads(store.path_for(key).read_text())["verdict"]["impression"] == "RLL consolidation"


def test_no_ctr_is_proposed_when_the_masks_give_an_implausible_ratio() -> None:
    """On the shared CR film the masks gave a 36.6 mm "heart" in a 132.7 mm thorax (CTR 0.28), shown
    as the proposal (QA under Xvfb): a ratio no heart has means the masks missed its borders."""
    visible = np.zeros((100, 120), bool)
    visible[20:80, 15:57] = True
    visible[20:80, 63:105] = True  # a 6 px gap in a 90 px thorax: 0.07
    assert propose_ctr(visible) is None
    visible[20:80, 5:15] = True
    visible[20:80, 105:115] = True
    visible[20:80, 35:85] = False  # a 50 px gap in 110 px: 0.45, proposed
    c0, c1, t0, t1 = propose_ctr(visible)
    assert (c1[0] - c0[0]) / (t1[0] - t0[0]) == pytest.approx(50 / 110)
