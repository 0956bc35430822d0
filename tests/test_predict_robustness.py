"""``predict`` never loses a finished result: incremental files, Ctrl+C, odd names and folders, --resume.

Also ``evaluate --json`` never replaces a file silently (issue 17).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import main  # noqa: E402
from inference.export import written_by_us  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("robust") / "model", size=32)


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


def _pngs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (30, 30), dtype=np.uint8))
        out.append(p)
    return out


def run(*args: str) -> int:
    return main.main(["predict", *args])


def _stop_after(monkeypatch, n: int, exc: BaseException, seen: list | None = None, check=None):
    """Make predict_paths yield ``n`` results, then raise ``exc`` (as Ctrl+C or a crash would)."""
    original = Predictor.predict_paths

    def patched(self, *args, **kwargs):
        for i, result in enumerate(original(self, *args, **kwargs)):
            if i == n:
                raise exc
            if check is not None and i > 0:
                check(i)  # before yielding result i: the i results before it must be on disk
            yield result

    monkeypatch.setattr(Predictor, "predict_paths", patched)


def test_results_are_on_disk_as_they_come(tmp_path, model_dir, monkeypatch):
    _pngs(tmp_path / "in", 5)
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    counts = []

    def check(i: int) -> None:
        on_disk = json.loads(out.read_text(encoding="utf-8"))
        rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8-sig"))))
        counts.append((len(on_disk), len(rows)))
        assert len(on_disk) == i and len(rows) == i

    _stop_after(monkeypatch, 99, RuntimeError("unused"), check=check)
    args = [str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--csv", str(table)]
    assert run(*args, "--batch-size", "2") == 0
    assert counts == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert not list(tmp_path.glob(".*.part"))  # no temporary left behind


def test_ctrl_c_saves_what_is_done_and_exits_130(tmp_path, model_dir, monkeypatch, capsys):
    _pngs(tmp_path / "in", 5)
    out = tmp_path / "r.json"
    _stop_after(monkeypatch, 3, KeyboardInterrupt())
    assert run(str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--batch-size", "2") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted: 3 of 5 files done" in err and str(out) in err
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [Path(r["file"]).name for r in records] == ["img0.png", "img1.png", "img2.png"]
    assert all(r["ok"] for r in records)


def test_a_crash_keeps_the_finished_results(tmp_path, model_dir, monkeypatch):
    _pngs(tmp_path / "in", 4)
    out = tmp_path / "r.csv"
    _stop_after(monkeypatch, 2, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        run(str(tmp_path / "in"), "--model", str(model_dir), "--csv", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [Path(r["file"]).name for r in rows] == ["img0.png", "img1.png"]


def test_resume_predicts_only_what_is_missing(tmp_path, model_dir, monkeypatch, capsys):
    files = _pngs(tmp_path / "in", 4)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    args = [str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--csv", str(table)]
    _stop_after(monkeypatch, 2, KeyboardInterrupt())
    assert run(*args) == 130
    monkeypatch.undo()
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))
    capsys.readouterr()
    # Without --resume or --overwrite the existing outputs stop the run.
    assert run(*args) == 2 and "--resume" in capsys.readouterr().err
    predicted: list[str] = []
    original = Predictor.predict_paths

    def spy(self, paths, *a, **k):
        paths = list(paths)
        predicted.extend(Path(p).name for p in paths)
        return original(self, paths, *a, **k)

    monkeypatch.setattr(Predictor, "predict_paths", spy)
    assert run(*args, "--resume") == 1  # broken.png still fails
    # broken.png failed before the interruption, so it is tried again; img0.png is done.
    assert predicted == ["broken.png", "img1.png", "img2.png", "img3.png"]
    assert "1 of 5 files already done" in capsys.readouterr().err
    names = sorted(Path(r["file"]).name for r in json.loads(out.read_text(encoding="utf-8")))
    assert names == sorted(["broken.png"] + [f.name for f in files])
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8-sig"))))
    assert sorted(Path(r["file"]).name for r in rows) == names
    # Once more: only the failed file is tried again; nothing is duplicated.
    predicted.clear()
    assert run(*args, "--resume") == 1
    assert predicted == ["broken.png"]
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 5
    broken = tmp_path / "in" / "broken.png"
    broken.unlink()
    assert run(*args, "--resume") == 0 and "nothing left to predict" in capsys.readouterr().err


def test_resume_needs_an_output_file(tmp_path, model_dir, capsys):
    _pngs(tmp_path / "in", 1)
    assert run(str(tmp_path / "in"), "--model", str(model_dir), "--resume") == 2
    assert "--resume needs" in capsys.readouterr().err


def test_resume_refuses_a_file_that_is_not_ours(tmp_path, model_dir, capsys):
    _pngs(tmp_path / "in", 1)
    out = tmp_path / "r.json"
    out.write_text('[{"file": "x"}]')
    assert run(str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--resume") == 2
    assert "not written by" in capsys.readouterr().err
    assert out.read_text() == '[{"file": "x"}]'


def test_overwrite_never_replaces_a_results_file_that_is_not_ours(tmp_path, model_dir, capsys):
    _pngs(tmp_path / "in", 1)
    out = tmp_path / "notes.json"
    out.write_text("my own notes")
    assert run(str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--overwrite") == 2
    assert "never replaced" in capsys.readouterr().err and out.read_text() == "my own notes"


def test_undecodable_file_name_is_escaped(tmp_path, model_dir, capsys):
    folder = tmp_path / "in"
    _pngs(folder, 1)
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write((folder / "img0.png").read_bytes())
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    assert run(str(folder), "--model", str(model_dir), "--json", str(out), "--csv", str(table)) == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [Path(r["file"]).name for r in records] == ["caf\\xe9.png", "img0.png"]
    assert "caf\\xe9.png" in table.read_text(encoding="utf-8-sig")
    assert run(str(folder), "--model", str(model_dir)) == 0  # to standard output as well
    assert "caf\\\\xe9.png" in capsys.readouterr().out


def test_symlink_loop_on_the_command_line_is_a_clear_error(tmp_path, model_dir, capsys):
    _pngs(tmp_path / "in", 1)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    out = tmp_path / "r.json"
    assert run(str(loop), str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out)) == 1
    err = capsys.readouterr().err
    assert "symbolic link loop" in err and "Traceback" not in err
    records = json.loads(out.read_text(encoding="utf-8"))
    assert records[0]["ok"] is False and "symbolic link loop" in records[0]["error"]
    assert records[1]["ok"] is True


def test_unreadable_subfolder_is_reported(tmp_path, model_dir, monkeypatch, capsys):
    folder = tmp_path / "in"
    _pngs(folder, 1)
    _pngs(folder / "locked", 1)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root reads every folder: simulate the denial
    out = tmp_path / "r.json"
    assert run(str(folder), "--model", str(model_dir), "--json", str(out)) == 1
    assert "cannot read folder" in capsys.readouterr().err
    records = json.loads(out.read_text(encoding="utf-8"))
    failed = [r for r in records if not r["ok"]]
    assert len(failed) == 1 and failed[0]["file"].endswith("locked") and "Permission denied" in failed[0]["error"]
    assert [Path(r["file"]).name for r in records if r["ok"]] == ["img0.png"]


def test_own_outputs_in_the_input_folder_are_not_predicted(tmp_path, model_dir):
    folder = tmp_path / "in"
    _pngs(folder, 2)
    exports = folder / "exports"
    assert run(str(folder), "--model", str(model_dir), "--export-dir", str(exports), "--formats", "png,dcm") == 0
    assert len(list(exports.glob("*.cxr.*"))) == 4
    out = tmp_path / "r.json"
    assert run(str(folder), "--model", str(model_dir), "--json", str(out)) == 0
    assert sorted(Path(r["file"]).name for r in json.loads(out.read_text())) == ["img0.png", "img1.png"]


def test_old_data_loss_scenario_source_bytes_unchanged(tmp_path, model_dir):
    """Issue 12: an SC exported next to a CR .dcm whose export name is already taken by another CR file."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "study"
    folder.mkdir()
    source = folder / "chest.dcm"
    make_dicom(source, rng.integers(0, 4096, (64, 64), dtype=np.uint16), bits_stored=12, modality="CR")
    colliding = folder / "chest.cxr.dcm"  # somebody's film that happens to carry our export's name
    make_dicom(colliding, rng.integers(0, 4096, (64, 64), dtype=np.uint16), bits_stored=12, modality="CR")
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (source, colliding)}
    out = tmp_path / "r.json"
    for names in ([str(folder)], [str(source), str(colliding)]):
        code = run(*names, "--model", str(model_dir), "--export-dir", str(folder), "--formats", "dcm", "--overwrite")
        assert code == 1, names  # the export is refused and reported
        code = run(
            *names,
            "--model",
            str(model_dir),
            "--export-dir",
            str(folder),
            "--formats",
            "dcm",
            "--json",
            str(out),
            "--overwrite",
        )
        records = json.loads(out.read_text())
        assert "never replace" in records[0]["error"] or "not written by" in records[0]["error"]
        for p, digest in digests.items():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, p
    assert pydicom.dcmread(source).Modality == "CR" and pydicom.dcmread(colliding).Modality == "CR"
    # Named explicitly, the colliding film is an input too: its own export went beside it, under a new name.
    assert sorted(p.name for p in folder.iterdir()) == ["chest (2).cxr.dcm", "chest.cxr.dcm", "chest.dcm"]
    assert written_by_us(folder / "chest (2).cxr.dcm")


def test_evaluate_json_is_not_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    out.write_text("earlier metrics")
    data = tmp_path / "data"
    data.mkdir()
    assert main.main(["evaluate", str(data), "--model", str(tmp_path), "--json", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "earlier metrics"
    # With --overwrite the run goes on (and here fails on the empty data, leaving the file alone).
    assert main.main(["evaluate", str(data), "--model", str(tmp_path), "--json", str(out), "--overwrite"]) == 1
    assert "--overwrite" not in capsys.readouterr().err


def test_resume_with_pseudonymous_names(tmp_path, model_dir, monkeypatch, capsys):
    """The pseudonyms come from the installation's salt, so a later run recognises what is done."""
    _pngs(tmp_path / "in", 3)
    out = tmp_path / "r.json"
    args = [str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--pseudonymous-names"]
    _stop_after(monkeypatch, 1, KeyboardInterrupt())
    assert run(*args) == 130
    monkeypatch.undo()
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))
    capsys.readouterr()
    assert run(*args, "--resume") == 0
    assert "1 of 3 files already done" in capsys.readouterr().err
    records = json.loads(out.read_text(encoding="utf-8"))
    assert len(records) == 3 and len({r["file"] for r in records}) == 3
    assert all(r["file"].startswith("anon-") and "img" not in json.dumps(r) for r in records)


def test_sigterm_saves_what_is_done_and_exits_130(tmp_path, model_dir, monkeypatch, capsys):
    import os
    import signal

    _pngs(tmp_path / "in", 5)
    out = tmp_path / "r.json"
    original = Predictor.predict_paths

    def terminated_after_two(self, *args, **kwargs):
        for i, result in enumerate(original(self, *args, **kwargs)):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as a logout or a scheduler's time limit would
            yield result

    monkeypatch.setattr(Predictor, "predict_paths", terminated_after_two)
    before = signal.getsignal(signal.SIGTERM)
    assert run(str(tmp_path / "in"), "--model", str(model_dir), "--json", str(out), "--batch-size", "2") == 130
    assert "Traceback" not in capsys.readouterr().err
    assert len(json.loads(out.read_text(encoding="utf-8"))) >= 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is predict's only while it runs
