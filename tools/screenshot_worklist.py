"""Screenshots of the worklist, the reader's verdict and compare, under a virtual X server.

    Xvfb :98 -screen 0 1600x1000x24 &
    DISPLAY=:98 python tools/screenshot_worklist.py [--out docs/screenshots]

Opens the real DICOMs of ``../shared/data/dicom`` and ``resources/samples`` with the bundled
model, plus one re-dated copy of the NIH film (a new Study and SOP Instance UID, study date
2019-06-01) so that one patient has a prior to compare with. The verdict keys are pressed
with ``xdotool`` (real X key events), the screen is captured with ImageMagick's
``import -window root``. Settings and sidecars go to a temporary folder.

Writes ``worklist-verdict.png`` (the worklist grouped by patient, a verdict given with the keys)
and ``worklist-compare.png`` (the NIH film beside its re-dated copy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DICOM = ROOT.parent / "shared" / "data" / "dicom"
NIH = "14_nih-cxr14-gcp_DX_chest_8bit_ImplicitLE.dcm"


def redated_copy(source: Path, target: Path) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20190601"
    ds.save_as(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        print("DISPLAY is not set: start Xvfb :98 and run with DISPLAY=:98", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="cxr-shots-"))
    os.environ["CXR_VIEWER_SETTINGS"] = str(home / "settings.ini")
    os.environ["CXR_VIEWER_HOME"] = str(home / "data")
    films = home / "films"
    films.mkdir()
    for f in sorted(SHARED_DICOM.glob("*.dcm")):
        shutil.copy(f, films / f.name)
    redated_copy(SHARED_DICOM / NIH, films / "14_nih_prior_2019.dcm")
    paths = [str(films), str(ROOT / "resources" / "samples")]

    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings
    from viewer.theme import apply_theme

    app = QApplication(sys.argv[:1])
    apply_theme(app)
    window = MainWindow(settings=ViewerSettings())
    window.settings.reader_name = "Dr A. Reader"
    window.move(0, 0)
    window.resize(1600, 1000)
    window.show()
    window.start_background()
    window.open_paths(paths)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def xdo(*words: str) -> None:
        subprocess.run(["xdotool", *words], check=True)

    def capture(name: str) -> None:
        app.processEvents()
        target = args.out / name
        subprocess.run(["import", "-window", "root", str(target)], check=True)
        if target.stat().st_size > 300_000:  # keep the repository small: fewer colours
            subprocess.run(["convert", str(target), "-colors", "128", str(target)], check=True)
        print(f"{target}: {target.stat().st_size // 1024} KB")

    def ready() -> bool:
        docs = window.session.documents()
        done = all(d.prediction is not None or d.error for d in docs)
        return window.session.model.state in ("ready", "failed") and len(docs) >= 8 and done

    def stage_verdict() -> None:
        if not ready() and time.monotonic() - start < args.timeout:
            QTimer.singleShot(500, stage_verdict)
            return
        session = window.session
        by_name = {d.name: d for d in session.documents()}
        controller = window.verdict_controller
        # Other films read by "earlier" keystrokes (direct calls), for a list with marks of each kind.
        for name, cls in (("11_siim-acr_CR_chest_8bit_JPEG-baseline.dcm", "Other finding"),):
            session.set_current(by_name[name].doc_id)
            controller.set_class(cls)
        session.set_current(by_name[NIH].doc_id)
        window.activateWindow()
        window.canvas.setFocus()
        app.processEvents()
        xdo("mousemove", "800", "500")
        for key in ("y", "F4"):
            xdo("key", key)
            app.processEvents()
            time.sleep(0.3)
            app.processEvents()
        xdo("type", "Clear lungs, no consolidation.")
        app.processEvents()
        xdo("key", "Escape")
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        window.thumbnails_presenter.flush()
        window.thumbnails.view.expandAll()
        window.resizeDocks([window.thumbnails_dock], [560], Qt.Orientation.Horizontal)
        QTimer.singleShot(500, lambda: (capture("worklist-verdict.png"), stage_compare()))

    def stage_compare() -> None:
        window.compare.start()
        window.thumbnails_presenter.flush()
        QTimer.singleShot(1500, lambda: (capture("worklist-compare.png"), window.close(), app.quit()))

    QTimer.singleShot(1000, stage_verdict)
    app.exec()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
