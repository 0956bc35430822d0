"""The one export path (inference.export.export_files): names, collisions, never a source file, cancel, progress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.export import (  # noqa: E402
    ExportError,
    ExportItem,
    ExportOptions,
    export_files,
    export_name,
    plan_exports,
    write_json,
    write_png,
    written_by_us,
)
from inference.loading import load_image  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402

OPTIONS = ExportOptions(salt="test-salt")


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from inference.predictor import Predictor

    return Predictor(make_tiny_bundle(tmp_path_factory.mktemp("batch") / "bundle", size=32), lungs=None)


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (40, 36), dtype=np.uint8))
    return path


def _item(path: Path, predictor, with_result: bool = True) -> ExportItem:
    image = load_image(path)
    if not with_result:
        return ExportItem(path, image, None)
    prediction, explanation = predictor.predict_and_explain(image)
    return ExportItem(path, image, prediction, explanation)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_names():
    assert export_name(Path("scan.dcm"), "dcm") == "scan.cxr.dcm"
    assert export_name(Path("dir/scan.png"), "pdf") == "scan.cxr.pdf"
    assert export_name(Path("results"), "csv") == "results.cxr.csv"
    assert export_name(Path("scan.cxr.png"), "png") == "scan.cxr.png"  # an export re-exported aims at itself
    assert export_name(Path("a:b?.png"), "png") == "a_b_.cxr.png"
    with pytest.raises(ValueError, match="tiff"):
        export_name(Path("a.png"), "tiff")


def test_same_folder_export_never_touches_the_source(tmp_path, predictor):
    source = _png(tmp_path / "chest.png")
    before = _digest(source)
    report = export_files([_item(source, predictor)], tmp_path, ["png", "pdf", "dcm"], OPTIONS)
    assert not report.errors and not report.skipped and not report.cancelled
    assert sorted(p.name for p in report.written) == ["chest.cxr.dcm", "chest.cxr.pdf", "chest.cxr.png"]
    assert _digest(source) == before
    assert all(written_by_us(p) for p in report.written)
    assert not written_by_us(source)


def test_dicom_source_and_dicom_export_in_its_own_folder(tmp_path, predictor):
    """The data-loss scenario of issue 12: SC next to a CR .dcm, every on_existing choice."""
    rng = np.random.default_rng(1)
    source = tmp_path / "chest.dcm"
    make_dicom(source, rng.integers(0, 4096, (64, 64), dtype=np.uint16), bits_stored=12, modality="CR")
    before = _digest(source)
    item = _item(source, predictor)
    for on_existing in ("refuse", "replace-ours", "keep-both"):
        report = export_files([item], tmp_path, ["dcm"], OPTIONS, on_existing=on_existing, protected=[source])
        assert not report.errors, report.errors
        assert _digest(source) == before, on_existing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chest (2).cxr.dcm", "chest.cxr.dcm", "chest.dcm"]
    assert pydicom.dcmread(source).Modality == "CR"


def test_target_equal_to_an_opened_file_is_refused(tmp_path, predictor):
    """The user opened an earlier export (ours by name and marker): it is still never written."""
    source = _png(tmp_path / "chest.png")
    first = export_files([_item(source, predictor)], tmp_path, ["png"], OPTIONS).written[0]
    assert first.name == "chest.cxr.png" and written_by_us(first)
    opened = _item(first, predictor)  # re-export the export: its target is itself
    plan = plan_exports([opened], tmp_path, ["png"], protected=[source, first])
    assert [(t.path.name, t.status) for t in plan] == [("chest.cxr.png", "refused")]
    assert "opened" in plan[0].reason
    before = _digest(first)
    report = export_files([opened], tmp_path, ["png"], OPTIONS, on_existing="replace-ours", protected=[first])
    assert report.written == [] and [p.name for p, _ in report.skipped] == ["chest.cxr.png"]
    assert _digest(first) == before
    # Protected also when the protected path is spelled another way (a symlinked folder).
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    plan = plan_exports([opened], link, ["png"], protected=[first])
    assert plan[0].status == "refused"


def test_existing_file_we_did_not_write_is_refused_even_with_replace(tmp_path, predictor):
    source = _png(tmp_path / "in" / "chest.png")
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "chest.cxr.png"
    foreign.write_bytes(b"somebody else's file")
    item = _item(source, predictor)
    plan = plan_exports([item], out, ["png"])
    assert plan[0].status == "refused" and "not written by" in plan[0].reason
    for on_existing in ("refuse", "replace-ours"):
        report = export_files([item], out, ["png"], OPTIONS, on_existing=on_existing)
        assert report.written == [] and report.skipped[0][0] == foreign
        assert foreign.read_bytes() == b"somebody else's file"
    # A real PNG with our name but without our marker is not ours either.
    cv2.imwrite(str(foreign), np.zeros((4, 4), np.uint8))
    assert not written_by_us(foreign)
    report = export_files([item], out, ["png"], OPTIONS, on_existing="replace-ours")
    assert report.written == [] and report.skipped
    # Keep both writes beside it.
    report = export_files([item], out, ["png"], OPTIONS, on_existing="keep-both")
    assert [p.name for p in report.written] == ["chest (2).cxr.png"]


def test_low_level_writers_never_replace_a_foreign_file(tmp_path, predictor):
    source = _png(tmp_path / "chest.png")
    item = _item(source, predictor)
    with pytest.raises(ExportError, match="never replaced"):
        write_png(source, item.image, item.prediction, item.explanation, ExportOptions(overwrite=True))
    with pytest.raises(ExportError, match="never replaced"):
        write_json(source, [], overwrite=True)
    assert load_image(source).pixels.shape == (40, 36)


def test_existing_file_we_wrote_replace_or_keep_both(tmp_path, predictor):
    source = _png(tmp_path / "in" / "chest.png")
    out = tmp_path / "out"
    out.mkdir()
    item = _item(source, predictor)
    first = export_files([item], out, ["png", "pdf", "dcm"], OPTIONS, tables=["csv", "json"])
    assert sorted(p.name for p in first.written) == [
        "chest.cxr.dcm",
        "chest.cxr.pdf",
        "chest.cxr.png",
        "results.cxr.csv",
        "results.cxr.json",
    ]
    assert all(written_by_us(p) for p in first.written)
    plan = plan_exports([item], out, ["png", "pdf", "dcm"], ["csv", "json"])
    assert {t.status for t in plan} == {"ours"}
    # refuse: nothing written, everything reported
    again = export_files([item], out, ["png", "pdf", "dcm"], OPTIONS, tables=["csv", "json"])
    assert again.written == [] and len(again.skipped) == 5
    # replace-ours: same names, new content
    mtimes = {p: p.stat().st_mtime_ns for p in first.written}
    replaced = export_files(
        [item], out, ["png", "pdf", "dcm"], OPTIONS, tables=["csv", "json"], on_existing="replace-ours"
    )
    assert sorted(replaced.written) == sorted(first.written) and not replaced.skipped
    assert all(p.stat().st_mtime_ns >= mtimes[p] for p in replaced.written)
    # keep-both: name (2).cxr.png
    both = export_files([item], out, ["png"], OPTIONS, on_existing="keep-both")
    assert [p.name for p in both.written] == ["chest (2).cxr.png"]
    both = export_files([item], out, ["png"], OPTIONS, on_existing="keep-both")
    assert [p.name for p in both.written] == ["chest (3).cxr.png"]


def test_same_stem_from_two_folders_gets_two_names(tmp_path, predictor):
    a = _png(tmp_path / "a" / "chest.png", 1)
    b = _png(tmp_path / "b" / "chest.png", 2)
    c = _png(tmp_path / "b" / "chest.jpg", 3)
    out = tmp_path / "out"
    out.mkdir()
    items = [_item(p, predictor) for p in (a, b, c)]
    plan = plan_exports(items, out, ["png", "pdf"])
    assert [t.path.name for t in plan] == [
        "chest.cxr.png",
        "chest.cxr.pdf",
        "chest (2).cxr.png",
        "chest (2).cxr.pdf",
        "chest (3).cxr.png",
        "chest (3).cxr.pdf",
    ]
    assert {t.status for t in plan} == {"free"}
    report = export_files(items, out, ["png", "pdf"], OPTIONS)
    assert len(report.written) == 6 and len({p.name for p in report.written}) == 6


def test_cancel_between_files_and_progress(tmp_path, predictor):
    items = [_item(_png(tmp_path / "in" / f"f{i}.png", i), predictor) for i in range(4)]
    out = tmp_path / "out"
    out.mkdir()
    calls: list[tuple[int, int]] = []
    report = export_files(
        items,
        out,
        ["png"],
        OPTIONS,
        tables=["csv"],
        progress=lambda done, total: calls.append((done, total)),
        cancelled=lambda: len(calls) >= 2,
    )
    assert calls == [(1, 4), (2, 4)]
    assert report.cancelled and sorted(p.name for p in report.written) == ["f0.cxr.png", "f1.cxr.png"]
    assert [p.name for p, _ in report.skipped] == ["results.cxr.csv"]  # no table of a cancelled export
    assert sorted(p.name for p in out.iterdir()) == ["f0.cxr.png", "f1.cxr.png"]
    full = export_files(items, out, ["png"], OPTIONS, progress=lambda d, t: calls.append((d, t)))
    assert calls[-4:] == [(1, 4), (2, 4), (3, 4), (4, 4)] and not full.cancelled


def test_missing_prediction_computed_or_reported(tmp_path, predictor):
    src = _png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    item = _item(src, predictor, with_result=False)
    report = export_files([item], out, ["png"], OPTIONS, tables=["json"])
    assert report.written and report.written[0].name == "results.cxr.json"
    assert report.errors and "no AI result" in report.errors[0][1]
    report = export_files([item], out, ["png"], OPTIONS, predictor=predictor)
    assert [p.name for p in report.written] == ["x.cxr.png"] and not report.errors


def test_missing_folder_is_an_error_not_an_exception(tmp_path, predictor):
    item = _item(_png(tmp_path / "x.png"), predictor)
    report = export_files([item], tmp_path / "nope", ["png"], OPTIONS)
    assert report.written == [] and "does not exist" in report.errors[0][1]


def test_unknown_policy_is_refused(tmp_path, predictor):
    item = _item(_png(tmp_path / "x.png"), predictor)
    with pytest.raises(ValueError, match="on_existing"):
        export_files([item], tmp_path, ["png"], OPTIONS, on_existing="overwrite")


def test_an_abstained_film_is_exported_without_a_heat_map(tmp_path, predictor):
    """A heat map would show "evidence" for a class the reader is not given (issue 13)."""
    import dataclasses

    source = _png(tmp_path / "in" / "film.png")
    item = _item(source, predictor)
    assert item.explanation is not None
    abstained = dataclasses.replace(item.prediction, abstain_reason="Lateral view (View Position LL).")
    for name, explanation in (("with", item.explanation), ("without", None)):
        (tmp_path / name).mkdir()
        export_files(
            [dataclasses.replace(item, prediction=abstained, explanation=explanation)], tmp_path / name, ["png"]
        )
    [with_map] = (tmp_path / "with").glob("*.cxr.png")
    [without] = (tmp_path / "without").glob("*.cxr.png")
    assert np.array_equal(cv2.imread(str(with_map)), cv2.imread(str(without)))
