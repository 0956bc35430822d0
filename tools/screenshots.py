"""Run the viewer headless, open the sample X-rays and save screenshots of it.

    python tools/screenshots.py [--out docs/screenshots] [--model MODEL_DIR] [FILE_OR_FOLDER ...]

Without a display the app runs on Qt's offscreen platform and each window is captured with
``QWidget.grab()`` (the same pixels a screen would show). With ``--xvfb`` and ``xvfb-run``
installed (``apt-get install xvfb``) it re-runs itself under a virtual X server instead.
Settings and user models go to a temporary folder, so a user's own setup is never touched.

Writes ``viewer.png`` (main window, Grad-CAM on), ``viewer-lung-window.png``,
``viewer-dicom.png`` (when a DICOM is among the inputs), ``model-manager.png``,
``export.png``, ``training.png`` and ``help.png``.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", help="files or folders to open (default: resources/samples)")
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNG files")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    p.add_argument("--select", default="covid", help="show the first image whose name contains this")
    p.add_argument("--xvfb", action="store_true", help="run under xvfb-run (a virtual X server)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the model and results")
    return p.parse_args(argv)


def wait_until(app, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return False


def settle(app, seconds: float = 0.3) -> None:
    wait_until(app, lambda: False, seconds)


def save(widget, path: Path, app) -> None:
    settle(app)
    widget.grab().save(str(path))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.xvfb and not os.environ.get("CXR_SCREENSHOTS_IN_XVFB"):
        if shutil.which("xvfb-run") is None:
            print("xvfb-run is not installed (apt-get install xvfb); using the offscreen platform", file=sys.stderr)
        else:
            env = dict(os.environ, CXR_SCREENSHOTS_IN_XVFB="1")
            w, h = args.size.split("x")
            cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {int(w) + 100}x{int(h) + 100}x24", sys.executable, *sys.argv]
            return subprocess.call(cmd, env=env)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scratch = Path(tempfile.mkdtemp(prefix="cxr-screenshots-"))
    os.environ["CXR_VIEWER_SETTINGS"] = str(scratch / "settings.ini")
    os.environ["CXR_VIEWER_HOME"] = str(scratch / "home")

    from PySide6.QtWidgets import QApplication

    from inference.paths import samples_dir
    from viewer.main_window import MainWindow
    from viewer.theme import apply_theme

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = args.paths or [str(samples_dir())]
    dicoms = sorted(SHARED_DICOM.glob("*.dcm")) if not args.paths and SHARED_DICOM.is_dir() else []
    paths += [str(p) for p in dicoms[:2]]

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_theme(app)
    window = MainWindow(model_dir=args.model)
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()
    window.start_background()
    window.open_paths(paths)
    if not wait_until(app, lambda: window.session.model.state in ("ready", "failed"), args.timeout):
        print("the model did not load in time", file=sys.stderr)
    wait_until(app, lambda: len(window.session) > 0, 30)
    settle(app, 1.0)
    if window.session.model.state == "ready":
        wait_until(
            app, lambda: all(d.prediction is not None or d.error for d in window.session.documents()), args.timeout
        )
    else:
        print(f"no model: {window.messages.messages()}", file=sys.stderr)

    ids = window.document_ids()
    chosen = next(
        (i for i in ids if args.select.lower() in window.session.document(i).name.lower()), ids[0] if ids else None
    )
    if chosen is None:
        print("nothing could be opened", file=sys.stderr)
        return 1
    window.show_document(chosen)
    window.messages_dock.hide()  # a clean first look: the tags panel, not the log
    window.tags_dock.show()
    window.tags_dock.raise_()
    if window.session.model.state == "ready":
        window.actions_by_id["overlay"].setChecked(True)
        wait_until(app, lambda: window.canvas.has_overlay(), args.timeout)
    save(window, out / "viewer.png", app)

    window.actions_by_id["overlay"].setChecked(False)
    window.apply_preset("2")
    save(window, out / "viewer-lung-window.png", app)
    window.apply_preset("0")

    dicom_ids = [i for i in ids if window.session.document(i).meta.format == "DICOM"]
    if dicom_ids:
        window.show_document(dicom_ids[0])
        window.actions_by_id["overlay"].setChecked(window.session.model.state == "ready")
        wait_until(app, lambda: window.canvas.has_overlay() or window.session.model.state != "ready", 30)
        save(window, out / "viewer-dicom.png", app)
        window.actions_by_id["overlay"].setChecked(False)
        window.show_document(chosen)

    from viewer.help_dialog import HelpDialog
    from viewer.model_manager import ModelManagerDialog
    from viewer.training_dialog import TrainingDialog

    for name, dialog in (
        ("model-manager.png", ModelManagerDialog(window.session, window.activate_model, window)),
        ("export.png", window.export_dialog()),
        ("help.png", HelpDialog(window)),
    ):
        dialog.show()
        save(dialog, out / name, app)
        dialog.close()

    training = TrainingDialog(window.session, window.activate_model, window)
    training.show()
    data = ROOT.parent / "shared" / "data" / "cxr" / "kaggle_covid19_image_dataset" / "train"
    if data.is_dir():
        training.folder_edit.setText(str(data))
        training.scan()
        wait_until(app, lambda: not training._scanning, 60)
    save(training, out / "training.png", app)
    training.hide()

    window.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
