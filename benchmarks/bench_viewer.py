"""Open many files in the viewer offscreen and measure what a user feels (issue 12).

Usage::

    python benchmarks/bench_viewer.py --files '/data/cxr/**/*.jpg' --limit 300 --json out.json
    python benchmarks/bench_viewer.py --synthetic 100 --size 3000 --json out.json        # 16-bit PNGs
    python benchmarks/bench_viewer.py --synthetic 100 --size 3000 --dicom --json out.json

Prints the time until the window is on screen (``first_paint_s``: built and painted once), to
the first image on the canvas, to the first AI result and to every file predicted, the peak
resident memory of the process (VmHWM, TensorFlow included), and the longest stall of the GUI
thread: a 10 ms QTimer measures how late the event loop serves it, from the moment the window
is on screen (``max_stall_ms`` over the whole run; ``max_stall_after_model_ms`` once the model is
ready; ``stalls_over_50ms`` lists [start s, length ms] of each). ``--trace-stalls FILE`` dumps
every thread's Python stack (faulthandler's watchdog, which needs no GIL) whenever the GUI is
90 ms late: what held the GIL.
After every file is predicted it switches the Grad-CAM overlay on for the current image and
reports how long the heat map took (``overlay_s``).

It runs the real bundled model (or ``--model``); settings go to a temporary INI file.
"""

from __future__ import annotations

import argparse
import faulthandler
import glob
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TICK_MS = 10


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def write_synthetic(folder: Path, n: int, size: int, dicom: bool) -> list[Path]:
    """``n`` distinct ``size`` px 16-bit chest-like films (they differ in one pixel)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # Two dark lung fields in a brighter body, with noise: enough texture for PNG to stay realistic in size.
    lungs = np.exp(-(((x - 0.32) / 0.13) ** 2 + ((y - 0.48) / 0.25) ** 2)) + np.exp(
        -(((x - 0.68) / 0.13) ** 2 + ((y - 0.48) / 0.25) ** 2)
    )
    base = 0.75 - 0.5 * lungs + 0.03 * rng.standard_normal((size, size)).astype(np.float32)
    pixels = np.clip(base * 4095, 0, 4095).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    if dicom:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.dicom_factory import make_dicom  # type: ignore[import-not-found]
    files = []
    for i in range(n):
        # Each film differs in one pixel: the viewer opens one film once (content hash or
        # SOP Instance UID), so byte-identical copies would collapse into a single document.
        pixels[0, 0] = i % 4096
        target = folder / f"film-{i:03d}{'.dcm' if dicom else '.png'}"
        if dicom:
            make_dicom(target, pixels, bits_stored=12)  # a new SOP Instance UID each
        else:
            assert cv2.imwrite(str(target), pixels)
        files.append(target)
    return files


def find_files(pattern: str, limit: int | None) -> list[Path]:
    p = Path(pattern)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))
    else:
        files = sorted(Path(f) for f in glob.glob(pattern, recursive=True))
    return files[:limit] if limit else files


class _Probe:
    """Reads the window through whichever API this checkout has (the bench also measures the old code)."""

    def __init__(self, window) -> None:
        self.w = window

    def docs(self) -> list:
        session = getattr(self.w, "session", None)
        if session is not None:
            return list(session.documents())
        return list(self.w.docs.values())

    def model_ready(self) -> bool:
        session = getattr(self.w, "session", None)
        state = session.model.state if session is not None else self.w.model_state
        return state == "ready"

    def has_image(self) -> bool:
        return self.w.canvas.image is not None

    def show_overlay(self) -> None:
        session = getattr(self.w, "session", None)
        if session is not None:
            session.set_overlay_visible(True)
        else:  # the old window: its toolbar action is what asks for the heat map
            self.w.actions_by_id["overlay"].setChecked(True)


def run(files: list[Path], model: str | None, timeout: float, trace_stalls: str | None = None) -> dict:
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    settings_dir = tempfile.mkdtemp(prefix="bench-viewer-settings-")
    os.environ["CXR_VIEWER_SETTINGS"] = os.path.join(settings_dir, "settings.ini")
    clock = QElapsedTimer()
    clock.start()  # before the window is built: first_paint_s includes its construction
    window = MainWindow(settings=ViewerSettings(), model_dir=model)
    window.resize(1400, 900)
    probe = _Probe(window)
    figures: dict = {"n_files": len(files)}
    state = {
        "failed": 0,
        "ready_at": None,
        "max_stall_ready": 0.0,
        "last": 0,
        "max_stall": 0.0,
        "stalls_over_100": 0,
        "overlay_asked": None,
        "done": False,
        "stalls": [],
    }

    trace = open(trace_stalls, "w") if trace_stalls else None  # noqa: SIM115 - closed after the run

    def on_screen() -> None:  # stalls count once the window is on screen: its first paint is done
        figures["first_paint_s"] = round(clock.elapsed() / 1000.0, 2)
        state["last"] = clock.elapsed()
        if trace is not None:
            faulthandler.dump_traceback_later(0.09, file=trace)

    window.first_painted.connect(lambda: QTimer.singleShot(0, on_screen))  # after the paint event

    def tick() -> None:
        if "first_paint_s" not in figures:
            return
        if trace is not None:  # faulthandler's C watchdog dumps every thread if this tick is 80 ms late
            faulthandler.dump_traceback_later(0.09, file=trace)
        now = clock.elapsed()
        late = now - state["last"] - TICK_MS
        state["last"] = now
        if late > state["max_stall"]:
            state["max_stall"] = float(late)
        if state["ready_at"] is not None and late > state["max_stall_ready"]:
            state["max_stall_ready"] = float(late)  # only the viewer's own work: TensorFlow is imported
        if state["ready_at"] is None and probe.model_ready():
            state["ready_at"] = now / 1000.0
        if late > 100:
            state["stalls_over_100"] += 1
        if late > 50:  # when each long stall happened: the model-load phases explain most of them
            state["stalls"].append([round((now - late) / 1000.0, 2), round(float(late))])
        t = now / 1000.0
        if "first_image_s" not in figures and probe.has_image():
            figures["first_image_s"] = t
        docs = probe.docs()
        predicted = sum(1 for d in docs if d.prediction is not None or d.error)
        if now - state.get("reported", 0) > 5000:
            state["reported"] = now
            print(f"  {t:6.1f} s: {len(docs)} open, {predicted} analysed", file=sys.stderr, flush=True)
        if "first_result_s" not in figures and predicted:
            figures["first_result_s"] = t
        settled = len(docs) + state["failed"] >= len(files) and predicted == len(docs)
        if "all_predicted_s" not in figures and settled and docs:
            figures["all_predicted_s"] = t
            abstained = [d for d in docs if getattr(d.prediction, "abstained", False)]
            figures["abstained"] = len(abstained)
            # The overlay is not offered for a film the model abstained on: show one it answered.
            answered = [d for d in docs if d.prediction is not None and d not in abstained]
            session = getattr(window, "session", None)
            if not answered:
                figures["overlay_s"] = None
            else:
                if session is not None and session.current in abstained:
                    session.set_current(answered[0].doc_id)
                state["overlay_asked"] = t
                probe.show_overlay()
        if state["overlay_asked"] is not None and "overlay_s" not in figures and window.canvas.has_overlay():
            figures["overlay_s"] = t - state["overlay_asked"]
        if "overlay_s" in figures or t > timeout:
            state["done"] = True
            app.quit()

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    finished = getattr(window, "open_finished", None)
    if finished is not None:  # files that cannot be opened count as settled
        finished.connect(lambda _ok, bad: state.__setitem__("failed", state["failed"] + bad))
    window.show()
    window.open_paths([str(f) for f in files])
    timer.start()
    app.exec()
    timer.stop()
    if trace is not None:
        faulthandler.cancel_dump_traceback_later()
        trace.close()
    figures["peak_rss_mb"] = round(_proc_status_kb("VmHWM") / 1024.0, 1)
    figures["final_rss_mb"] = round(_proc_status_kb("VmRSS") / 1024.0, 1)
    figures["max_stall_ms"] = round(state["max_stall"], 1)
    figures["stalls_over_100ms"] = state["stalls_over_100"]
    figures["stalls_over_50ms"] = state["stalls"]  # [start s, length ms]
    figures["model_ready_s"] = round(state["ready_at"], 2) if state["ready_at"] is not None else None
    figures["max_stall_after_model_ms"] = round(state["max_stall_ready"], 1)
    figures["timed_out"] = "all_predicted_s" not in figures
    for key in ("first_image_s", "first_result_s", "all_predicted_s", "overlay_s"):
        if figures.get(key) is not None:
            figures[key] = round(figures[key], 2)
    window.close()
    shutil.rmtree(settings_dir, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", help="a folder (searched recursively) or a glob of image files")
    source.add_argument("--synthetic", type=int, metavar="N", help="write N synthetic films (distinct by one pixel)")
    parser.add_argument("--size", type=int, default=3000, help="side of the synthetic film in pixels")
    parser.add_argument("--dicom", action="store_true", help="synthetic films as DICOM instead of 16-bit PNG")
    parser.add_argument("--limit", type=int, default=None, help="open at most this many of --files")
    parser.add_argument("--model", default=None, help="model folder (default: the viewer's active model)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument(
        "--trace-stalls", default=None, metavar="FILE", help="dump every thread's stack to FILE when the GUI is late"
    )
    args = parser.parse_args(argv)

    tmp = None
    if args.synthetic:
        tmp = Path(tempfile.mkdtemp(prefix="bench-viewer-films-"))
        files = write_synthetic(tmp, args.synthetic, args.size, args.dicom)
    else:
        files = find_files(args.files, args.limit)
    if not files:
        print("no files to open", file=sys.stderr)
        return 2
    try:
        figures = run(files, args.model, args.timeout, args.trace_stalls)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for key, value in figures.items():
        print(f"{key:>18}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not figures["timed_out"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
