"""``main.py predict``: headless prediction with progress, JSON/CSV output and exports.

Usage::

    python main.py predict PATH... [--model DIR] [--json OUT|-] [--csv OUT] [--resume]
                           [--export-dir DIR] [--formats png,pdf,dcm,sr,gsps] [--gradcam]
                           [--method gradcam|gradcam++] [--batch-size N]
                           [--keep-identifiers] [--pseudonymous-names] [--overwrite]

Each PATH is a file or a folder; folders are searched recursively for PNG, JPEG and
DICOM files (by suffix, or by content for files without one), hidden files and folders
skipped, and so are our own outputs (``*.cxr.png|pdf|dcm|sr.dcm|gsps.dcm|csv|json``), so an export folder
inside the input folder is not predicted again. A folder that cannot be read is reported
(on standard error and as a failed entry), never skipped silently; symbolic links to
folders are not followed. Without ``--json`` and ``--csv`` the JSON goes to standard output.
A progress bar with rate and ETA is drawn on standard error when it is a terminal.

``--json``/``--csv`` files are rewritten atomically while the files are predicted, so the
results finished so far are always on disk, complete; Ctrl+C stops, saves what is done and
exits with 130. ``--resume`` reads back what is in them and predicts only the files not
there yet (files that failed are tried again).

Exports (``--export-dir``) go through :func:`inference.export.export_files`: named
``<name>.cxr.png``, ``.cxr.pdf``, ``.cxr.dcm`` (the default formats), and on request
``.cxr.sr.dcm`` (DICOM Structured Report of the AI result) and ``.cxr.gsps.dcm`` (presentation
state with the AI result as text and, with ``--gradcam``, the heat peak circled), keeping the
folder structure below each PATH folder; with ``--gradcam`` they carry the heat map. SR and
GSPS refer to the input DICOM, so PNG/JPEG inputs get none (a note on standard error says so).
An existing export of ours is replaced only with ``--overwrite``; an input file or a file this application did not write
is never replaced. With ``--pseudonymous-names`` the exports are named ``anon-<12 hex>``
(a salted hash of the input path, the same on every run of this installation), in one
folder, the JSON/CSV ``file`` holds that name and ``exports`` the names relative to DIR.

Exit status: 0 when every file was predicted (and exported), 1 when any file failed
(the others are still predicted and reported), 2 for a usage error or a model that
cannot be loaded, 130 when interrupted (the results so far are saved).

JSON output: a list with one object per file, in the order the files were found::

    {
      "file": "scans/a.dcm",            # the path as found (undecodable bytes as \\xNN); a pseudonym with
                                         # --pseudonymous-names
      "ok": true,                        # false: the file could not be read, predicted or exported
      "error": null,                     # why, when ok is false (written for the person reading it)
      "label": "Normal",                 # the predicted class; null when the file could not be read
                                         # or the model abstained
      "class_index": 1,                  # its position in the model's class list (null likewise)
      "abstained": false,                # true: "No AI result", the film is out of the model's scope
      "abstain_reason": null,            # why, in full sentences (inference.predictor gate)
      "probabilities": {"COVID-19": 0.021, "Normal": 0.951, "Pneumonia": 0.028},  # model's class order
      "model": {"name": "cxr-default", "version": "1.0.0"},
      "device": "CPU",                   # or "GPU (...)"
      "lung_warning": null,              # text when the lung model found no plausible lungs
      "image": {"format": "DICOM", "width": 2048, "height": 2500, "bits_stored": 12,
                "modality": "DX", "view_position": "PA"},                # when the file was read
      "gradcam": {"method": "gradcam", "class": "Normal",                # with --gradcam
                  "peak": [1020, 877],                                   # hottest pixel (x, y), original image
                  "lung_heat_fraction": 0.83},                           # heat share in the lungs (null: none found)
      "patient": {"PatientName": "...", "PatientID": "...", "PatientBirthDate": "..."},  # --keep-identifiers
      "exports": ["out/a.cxr.png", "out/a.cxr.pdf", "out/a.cxr.dcm"],    # with --export-dir
      "software": "CXR Viewer"           # marks the file as ours (it may be replaced with --overwrite)
    }

The CSV has one row per file with the same content flattened: ``file, ok, error, label,
abstained, abstain_reason, p_<class>..., model_name, model_version, device, image_*, gradcam_*, exports, software``;
a text cell starting with ``= + - @``, tab or CR gets a leading apostrophe (no formulas).
Patient name, ID and birth date appear nowhere unless ``--keep-identifiers`` is given
(the README's privacy section says what each output keeps).

TensorFlow is imported only when the command runs, so ``main.py --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["register", "run_predict", "find_images", "scan_inputs"]


def _fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict files or folders headless (JSON/CSV, exports)",
        description="Predict chest X-ray files or folders without the viewer. Research use only.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--json", metavar="OUT", help="write the JSON results to OUT ('-' for standard output)")
    p.add_argument("--csv", metavar="OUT", help="write a CSV summary to OUT ('-' for standard output)")
    p.add_argument("--export-dir", metavar="DIR", help="write exports of each file into DIR")
    p.add_argument(
        "--formats",
        metavar="LIST",
        help="export formats, comma-separated: png,pdf,dcm,sr,gsps (default: png,pdf,dcm; needs --export-dir; "
        "sr and gsps for DICOM inputs only)",
    )
    p.add_argument("--gradcam", action="store_true", help="compute Grad-CAM (JSON peak, heat map in exports)")
    p.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam", help="heat-map method")
    p.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="images per model call")
    p.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="keep patient name, ID, birth date, study dates, UIDs and descriptions in outputs",
    )
    p.add_argument(
        "--pseudonymous-names",
        action="store_true",
        help="name exports and table entries by a salted hash of the input path instead of its name",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep what --json/--csv already hold and predict only the files not there yet",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --json/--csv and earlier exports written by this application (never other files)",
    )
    p.add_argument("--colormap", default="jet", help="heat-map colour map for exports (default: jet)")
    p.add_argument("--opacity", type=_fraction_arg, default=0.4, help="heat-map opacity in exports, 0-1")
    p.set_defaults(func=run_predict)


# ------------------------------------------------------------------------------ finding files


def _hidden(part: str) -> bool:
    return part.startswith(".")


def scan_inputs(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """Every file to predict, as (file, the folder argument it was found under or None), and the problems.

    Files named explicitly are kept even if their suffix is unusual (the loader sniffs
    content and reports what it finds); missing ones too, so that they are reported.
    Folders contribute supported, visible files that are not our own outputs, in sorted
    order; links to folders are not followed. Problems are (path, message): a symbolic
    link loop named on the command line, a folder that cannot be read.
    """
    from inference.export.marker import is_our_name
    from inference.export.privacy import printable
    from inference.loading import is_supported_file

    found: list[tuple[Path, Path | None]] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(file: Path, root: Path | None) -> None:
        key = os.path.realpath(file)
        if key not in seen:
            seen.add(key)
            found.append((file, root))

    for raw in paths:
        path = Path(raw)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                problems.append((str(path), f"{printable(path)} is a symbolic link loop"))
                continue
            add(path, None)  # missing or unreadable: the loader says why, in the results
            continue
        if not stat.S_ISDIR(st.st_mode):
            add(path, None)
            continue

        def unreadable(exc: OSError, root: Path = path) -> None:
            folder = exc.filename if exc.filename is not None else root
            problems.append((str(folder), f"cannot read folder {printable(folder)}: {exc.strerror or exc}"))

        in_folder = []
        for folder, dirs, files in os.walk(path, onerror=unreadable, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            for name in files:
                if _hidden(name) or is_our_name(name):
                    continue
                child = Path(folder, name)
                try:
                    if child.is_file() and is_supported_file(child):
                        in_folder.append(child)
                except OSError as exc:
                    problems.append((str(child), f"cannot read {printable(child)}: {exc.strerror or exc}"))
        for child in sorted(in_folder):
            add(child, path)
    return found, problems


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Path | None]]:
    """The files :func:`scan_inputs` finds (without its problems)."""
    return scan_inputs(paths)[0]


# ------------------------------------------------------------------------------ result files


def _fail(message: str) -> int:
    from inference.export.privacy import printable

    print(f"predict: error: {printable(message)}", file=sys.stderr)
    return 2


_SMALL = 512 * 1024  # characters: a table this small is rewritten after every result


class _ResultsFile:
    """One ``--json``/``--csv`` output, rewritten atomically as results come in.

    The rewrite is a temporary file moved into place, so the file on disk is always a
    complete table of the results so far (every one while the table is under 512 KB, about
    a thousand files; beyond, a rewrite waits until 20 times its own last duration has
    passed, and the rest is written on the way out, also after Ctrl+C or an error).
    """

    def __init__(self, path: Path, fmt: str, replace_existing: bool) -> None:
        self.path, self.fmt = path, fmt
        self.previous: list[dict[str, Any]] = []  # JSON records or CSV rows read back with --resume
        self.records: list[dict[str, Any]] = []
        self._replace = replace_existing
        self._last_write = 0.0
        self._cost = 0.0
        self._size = 0
        self._dirty = False

    def read_back(self) -> None:
        """Load what the file holds (``--resume``); ValueError when it is not one of ours."""
        from inference.export.marker import has_our_marker
        from inference.export.privacy import csv_unsafe

        if not self.path.exists():
            return
        if not has_our_marker(self.path):
            raise ValueError(f"{self.path} was not written by predict; cannot resume from it")
        if self.fmt == "json":
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.previous = [r for r in data if isinstance(r, dict)]
        else:
            with self.path.open(encoding="utf-8-sig", newline="") as f:
                self.previous = [{k: csv_unsafe(v or "") for k, v in row.items()} for row in csv.DictReader(f)]
        self._replace = True  # ours: rewritten from now on

    def done_keys(self) -> set[str]:
        ok = ("True", True)
        return {str(r.get("file")) for r in self.previous if r.get("ok") in ok}

    def keep_only(self, keys: set[str]) -> None:
        self.previous = [r for r in self.previous if str(r.get("file")) in keys]

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._dirty = True
        # Tables under _SMALL bytes are rewritten after every record; a larger one once 20 times
        # its last rewrite's duration has passed (at most about 5% of the run spent rewriting).
        if self._size < _SMALL or time.monotonic() - self._last_write >= 20 * self._cost:
            self.flush()

    def text(self) -> str:
        from inference.export.tables import flatten_record, rows_to_csv

        if self.fmt == "json":
            return json.dumps(self.previous + self.records, indent=2, ensure_ascii=False) + "\n"
        return rows_to_csv(self.previous + [flatten_record(r) for r in self.records])

    def flush(self) -> None:
        from inference.export.files import atomic_write

        if not self._dirty and self.path.exists():
            return
        started = time.monotonic()
        text = self.text()
        encoding = "utf-8" if self.fmt == "json" else "utf-8-sig"  # the BOM lets Excel read UTF-8
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding=encoding, newline=""), self._replace)
        self._replace = True  # the file is ours now
        self._dirty = False
        self._last_write = time.monotonic()
        self._cost = self._last_write - started
        self._size = len(text)


def _check_output(target: str | None, overwrite: bool, resume: bool) -> str | None:
    if target and target != "-":
        from inference.export.marker import SOFTWARE, has_our_marker

        p = Path(target)
        if p.exists():
            if not (overwrite or resume):
                return f"{p} already exists; choose another name, pass --overwrite, or --resume to continue it"
            if not has_our_marker(p):
                return f"{p} was not written by {SOFTWARE}, so it is never replaced; choose another name"
        if not p.parent.exists():
            return f"the folder {p.parent} does not exist"
    return None


# ------------------------------------------------------------------------------ the command


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict``; returns the exit status (0 all well, 1 some file failed, 2 usage/model error, 130 Ctrl+C)."""
    previous = _terminate_as_interrupt()
    try:
        return _run_predict(args)
    except KeyboardInterrupt:
        print("\npredict: interrupted before any file was predicted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt():
    """SIGTERM (a logout, ``kill``, a batch scheduler's time limit) ends predict as Ctrl+C does:
    the finished results are saved. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum, _frame) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _run_predict(args: argparse.Namespace) -> int:
    if args.formats and not args.export_dir:
        return _fail("--formats needs --export-dir")
    from inference.export.many import DEFAULT_FORMATS, parse_formats

    try:
        formats = parse_formats(args.formats) if args.formats else list(DEFAULT_FORMATS)
    except ValueError as exc:
        return _fail(str(exc))
    outputs = [("--json", args.json), ("--csv", args.csv)]
    if sum(1 for _, v in outputs if v == "-") > 1:
        return _fail("only one of --json and --csv can go to standard output")
    if args.resume and not any(v and v != "-" for _, v in outputs):
        return _fail("--resume needs --json OUT or --csv OUT (a file to continue)")
    for _, target in outputs:
        problem = _check_output(target, args.overwrite, args.resume)
        if problem:
            return _fail(problem)
    if args.colormap:
        from inference.overlay import COLORMAPS

        if args.colormap not in COLORMAPS:
            return _fail(f"unknown colour map {args.colormap!r}; choose from {', '.join(COLORMAPS)}")
    files, problems = scan_inputs(args.paths)
    for _, message in problems:
        print(f"predict: warning: {message}", file=sys.stderr)
    if not files:
        return _fail(f"no PNG, JPEG or DICOM files found in {', '.join(map(str, args.paths))}")

    from inference.paths import bundled_model_dir

    model_dir = Path(args.model) if args.model else bundled_model_dir()
    if not args.model and not model_dir.exists():
        return _fail(f"the bundled model is missing at {model_dir}; pass --model DIR")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inference.bundle import BundleError
    from inference.predictor import Predictor

    try:
        predictor = Predictor(model_dir)
    except BundleError as exc:
        return _fail(str(exc))
    return _predict_all(args, predictor, files, formats, problems)


def _predict_all(
    args: argparse.Namespace,
    predictor,
    files: Sequence[tuple[Path, Path | None]],
    formats: list[str],
    problems: Sequence[tuple[str, str]] = (),
) -> int:
    from tqdm import tqdm

    from inference.export import (
        ExportItem,
        ExportOptions,
        ProtectedFiles,
        dicom_object_refusal,
        export_files,
        result_record,
    )
    from inference.export.privacy import printable, pseudonym
    from inference.export.tables import records_to_csv
    from inference.predictor import FileResult

    export_dir = Path(args.export_dir) if args.export_dir else None
    options = ExportOptions(
        keep_identifiers=args.keep_identifiers,
        pseudonymous_names=args.pseudonymous_names,
        colormap=args.colormap,
        opacity=args.opacity,
    )
    salt = options.effective_salt() if args.pseudonymous_names else ""

    def label(file: str | os.PathLike[str]) -> str | None:
        return pseudonym(file, salt) if args.pseudonymous_names else None

    def key(file: str | os.PathLike[str]) -> str:
        return label(file) or printable(file)

    sinks = [
        _ResultsFile(Path(target), fmt, args.overwrite)
        for fmt, target in (("json", args.json), ("csv", args.csv))
        if target and target != "-"
    ]
    # Every input is protected, also the ones --resume skips: no export may land on any of them.
    protected = ProtectedFiles(f for f, _ in files) if export_dir is not None else ProtectedFiles()
    if args.resume:
        try:
            for sink in sinks:
                sink.read_back()
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot resume: {exc}")
        done = set.intersection(*(sink.done_keys() for sink in sinks))
        for sink in sinks:
            sink.keep_only(done)
        before = len(files)
        files = [(f, root) for f, root in files if key(f) not in done]
        print(f"predict: resuming: {before - len(files)} of {before} files already done", file=sys.stderr)
        if not files and not problems:
            print("predict: nothing left to predict", file=sys.stderr)
            return 0
    if export_dir is not None:
        try:
            export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(f"cannot create {export_dir}: {exc.strerror or exc}")

    roots = {str(f): root for f, root in files}
    model = (predictor.info.name, predictor.info.version)
    reserved: set[str] = set()
    on_existing = "replace-ours" if args.overwrite else "refuse"
    records: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        records.append(record)
        for sink in sinks:
            sink.add(record)

    for path, message in problems:  # reported as failed entries, not skipped silently
        emit(result_record(FileResult(path, False, message), model, predictor.device, file_label=label(path)))

    noted: list[bool] = []  # the note on SR/GSPS for PNG/JPEG inputs is printed once

    def export_one(result) -> tuple[list[str], str]:
        """Export one predicted file through the one export path: (files written as shown, problem or "")."""
        file = Path(result.file)
        if options.pseudonymous_names:
            out = export_dir  # folder names can identify as much as file names: one flat folder
        else:
            root = roots.get(result.file)
            rel = file.relative_to(root) if root is not None else Path(file.name)
            out = export_dir / rel.parent
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [], f"export failed: cannot create {out}: {exc.strerror or exc}"
        item = ExportItem(file, result.image, result.prediction, result.explanation)
        # An SR or GSPS refers to the input DICOM: a PNG/JPEG has none, so it gets the other formats.
        item_formats = [f for f in formats if not dicom_object_refusal(result.image, f)]
        if len(item_formats) < len(formats) and not noted:
            noted.append(True)
            dropped = ",".join(f for f in formats if f not in item_formats)
            # (no file name: with --pseudonymous-names it may be the patient's)
            print(
                f"predict: note: {dropped} written for DICOM inputs only; PNG/JPEG inputs get the others",
                file=sys.stderr,
            )
        if not item_formats:
            return [], ""
        report = export_files(
            [item],
            out,
            item_formats,
            options,
            predictor.info,
            protected=protected,
            on_existing=on_existing,
            reserved=reserved,
        )
        shown = [str(p.relative_to(export_dir)) if options.pseudonymous_names else str(p) for p in report.written]
        if report.errors:
            return shown, "export failed: " + "; ".join(message for _, message in report.errors)
        if report.skipped:
            hint = "" if on_existing == "replace-ours" else " (pass --overwrite to replace earlier exports of ours)"
            return shown, "export skipped: " + "; ".join(why for _, why in report.skipped) + hint
        return shown, ""

    interrupted = False
    bar = tqdm(
        total=len(files), file=sys.stderr, unit="image", disable=not sys.stderr.isatty(), leave=False, smoothing=0.1
    )
    results = predictor.predict_paths(
        [f for f, _ in files],
        batch_size=args.batch_size,
        explain=args.gradcam,
        method=args.method,
        keep_images=True,  # for the record's image facts and the exports; dropped after each record
    )
    try:
        for result in results:
            exports: list[str] | None = None
            if export_dir is not None and result.ok:
                exports, problem = export_one(result)
                if problem:
                    result.ok, result.error = False, problem
            emit(
                result_record(
                    result, model, predictor.device, args.keep_identifiers, exports, file_label=label(result.file)
                )
            )
            result.image = None  # the next batch is already decoded; do not keep this one alive too
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results.close()  # stops the decoding threads
        bar.close()
        try:
            for sink in sinks:
                sink.flush()  # also after an unexpected error: what is finished stays on disk
        except OSError as exc:  # ExportError included
            print(f"predict: error: {printable(str(exc))}", file=sys.stderr)
            return 2
    if args.csv == "-":
        sys.stdout.write(records_to_csv(records))
    elif args.json == "-" or not (args.json or args.csv):
        json.dump(records, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    sys.stdout.flush()
    failed = sum(1 for r in records if not r["ok"])
    saved = f"; results saved to {', '.join(str(s.path) for s in sinks)}" if sinks else ""
    if interrupted:
        print(
            f"predict: interrupted: {len(records) - failed} of {len(files) + len(problems)} files done{saved}",
            file=sys.stderr,
        )
        return 130
    print(
        f"predict: {len(records) - failed} of {len(records)} files predicted with "
        f"{predictor.info.display_name} on {predictor.device}" + (f"; {failed} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
