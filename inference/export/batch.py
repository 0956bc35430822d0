"""The one export path: plan the files, then write them, for one image or many.

The viewer's export dialog, ``predict --export-dir`` and library callers all come here.
Names are always ``<stem>.cxr.<ext>`` (tables ``<name>.cxr.csv|json``), so an export can
never be called like the file it was made from. Before anything is written every target is
classified (:func:`plan_exports`):

- ``free``: nothing there;
- ``ours``: a file this application wrote (our name and our marker inside it, see
  :func:`written_by_us`); it may be replaced ("replace-ours") or kept beside ("keep-both");
- ``refused``: a file the user opened (``protected``), a source of this export, or any existing
  file this application did not write. It is never written to, whatever ``on_existing`` says;
  "keep-both" writes beside it under a free name.

Writing goes through :func:`inference.export.files.atomic_write`, which checks again just
before the rename, so a file that appears meanwhile is not replaced either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from inference.annotations import Annotation
from inference.bundle import BundleInfo
from inference.export.dicom_sc import write_dicom_sc
from inference.export.files import ExportError
from inference.export.many import FORMATS, TABLE_FORMATS, parse_formats
from inference.export.marker import MARKER_COLUMN, OUTPUT_INFIX, SOFTWARE, has_our_marker, is_our_name
from inference.export.marks import measured
from inference.export.options import ExportOptions
from inference.export.pacs import write_gsps, write_sr
from inference.export.pdf import write_pdf
from inference.export.png import write_png
from inference.export.privacy import printable, pseudonym
from inference.export.reference import dicom_object_refusal
from inference.export.tables import result_record, verdict_record, write_csv, write_json
from inference.image import Window, XRayImage
from inference.predictor import Explanation, FileResult, Prediction
from inference.verdict import Verdict

__all__ = [
    "OUTPUT_INFIX",
    "ON_EXISTING",
    "TABLE_NAME",
    "ExportItem",
    "ExportReport",
    "PlannedTarget",
    "ProtectedFiles",
    "export_files",
    "export_name",
    "export_stem",
    "plan_exports",
    "written_by_us",
]

ON_EXISTING = ("refuse", "keep-both", "replace-ours")
TABLE_NAME = "results"  # tables are results.cxr.csv / results.cxr.json unless the caller names them
_NUMBERED = re.compile(r"^(?P<stem>.*) \((?P<n>\d+)\)$")


def export_stem(source: str | os.PathLike[str]) -> str:
    """The stem exports of ``source`` are named after: its name without suffix and without ``.cxr``.

    Re-exporting an export (``scan.cxr.png``) therefore aims at ``scan.cxr.*`` again, where
    it is recognised (and refused when it is the opened file), instead of growing
    ``scan.cxr.cxr.png``. Characters a file system may not accept become ``_``.
    """
    name = Path(source).name
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix else name
    for own in (".sr", ".gsps"):  # scan.cxr.sr.dcm
        if stem.lower().endswith(OUTPUT_INFIX + own):
            stem = stem[: -len(own)]
    if stem.lower().endswith(OUTPUT_INFIX):
        stem = stem[: -len(OUTPUT_INFIX)]
    stem = printable(stem)
    stem = re.sub(r'[\\/:*?"<>|]', "_", stem).strip(" .") or "image"
    return stem


def export_name(source: str | os.PathLike[str], fmt: str) -> str:
    """``scan.dcm``, ``"dcm"`` -> ``scan.cxr.dcm``; ``"sr"`` -> ``scan.cxr.sr.dcm``; ``"gsps"`` ->
    ``scan.cxr.gsps.dcm``; a table: ``export_name("results", "csv")`` -> ``results.cxr.csv``.

    Raises ValueError for an unknown format.
    """
    fmt = fmt.lower().lstrip(".")
    fmt = "dcm" if fmt == "dicom" else fmt
    suffix = FORMATS.get(fmt) or TABLE_FORMATS.get(fmt)
    if suffix is None:
        raise ValueError(f"unknown export format {fmt!r}")
    return f"{export_stem(source)}{OUTPUT_INFIX}{suffix}"


def _numbered(path: Path, n: int) -> Path:
    """``name.cxr.png`` -> ``name (n).cxr.png``."""
    stem, _, ext = path.name.rpartition(OUTPUT_INFIX + ".")
    match = _NUMBERED.match(stem)
    if match:
        stem = match["stem"]
    return path.with_name(f"{stem} ({n}){OUTPUT_INFIX}.{ext}")


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(path)))


def written_by_us(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has our ``<stem>.cxr.<ext>`` name AND our marker inside (not a link)."""
    p = Path(path)
    return is_our_name(p) and not p.is_symlink() and has_our_marker(p)


class ProtectedFiles:
    """Files that are never written: compared by identity (device, inode) and by resolved path.

    Build it once for many calls (``predict`` over thousands of files); :func:`plan_exports`
    accepts it or any iterable of paths.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._ids: set[tuple[int, int]] = set()
        self._paths: set[str] = set()
        for p in paths:
            self.add(p)

    def add(self, path: str | os.PathLike[str]) -> None:
        self._paths.add(os.path.normcase(os.path.abspath(os.fspath(path))))
        try:
            self._paths.add(os.path.normcase(os.path.realpath(os.fspath(path))))
            st = os.stat(path)
            self._ids.add((st.st_dev, st.st_ino))
        except (OSError, ValueError, RuntimeError):
            pass

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str | os.PathLike):
            return False
        text = os.fspath(path)
        if os.path.normcase(os.path.abspath(text)) in self._paths:
            return True
        try:
            if os.path.normcase(os.path.realpath(text)) in self._paths:
                return True
            st = os.stat(text)
        except (OSError, ValueError, RuntimeError):
            return False
        return (st.st_dev, st.st_ino) in self._ids


@dataclass(frozen=True)
class ExportItem:
    source: Path  # the file the user opened (never written, never replaced)
    image: XRayImage  # decoded pixels (the caller reloads an evicted film before)
    prediction: Prediction | None  # None -> computed with `predictor` if given, else an error for this item
    explanation: Explanation | None = None  # None and a heat map wanted -> computed with `predictor` if given
    window: Window | None = None  # the on-screen window when "as displayed" is chosen
    invert: bool = False
    class_index: int | None = None  # class to explain (None: the predicted one)
    # The reader's work on the film (its sidecar, inference.sidecar): burned into PNG/PDF/SC,
    # listed in the PDF and the tables, and carried by the SR and GSPS.
    annotations: tuple[Annotation, ...] = ()
    verdict: Verdict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))  # a str is accepted too
        object.__setattr__(self, "annotations", tuple(self.annotations))


@dataclass(frozen=True)
class PlannedTarget:
    item_index: int | None  # None for a table (csv/json)
    fmt: str
    path: Path
    status: str  # "free" | "ours" | "refused"
    reason: str = ""  # user-facing sentence for "ours"/"refused"


@dataclass
class ExportReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (target, why): refused or not replaced
    errors: list[tuple[Path, str]] = field(default_factory=list)  # (source or target, message)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and not self.skipped and not self.cancelled


def _as_protected(protected: ProtectedFiles | Iterable[str | os.PathLike[str]]) -> ProtectedFiles:
    return protected if isinstance(protected, ProtectedFiles) else ProtectedFiles(protected)


def _classify(path: Path, protected: ProtectedFiles, sources: ProtectedFiles) -> tuple[str, str]:
    if path in protected or path in sources:
        return "refused", f"{printable(path.name)} is an opened or source file; an export never replaces it."
    if not os.path.lexists(path):
        return "free", ""
    if written_by_us(path):
        return "ours", f"{printable(path.name)} is an earlier export of {SOFTWARE}; it can be replaced or kept."
    return "refused", f"{printable(path.name)} already exists and was not written by {SOFTWARE}; it is never replaced."


def plan_exports(
    items: Sequence[ExportItem],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str],
    tables: Iterable[str] = (),
    protected: ProtectedFiles | Iterable[str | os.PathLike[str]] = (),
    *,
    options: ExportOptions | None = None,
    table_name: str = TABLE_NAME,
    reserved: set[str] | None = None,
) -> list[PlannedTarget]:
    """Every file an export would write, with its status; nothing is written.

    ``protected``: every file the user has opened (all of them, not only the ones exported);
    the items' sources are always protected too. Two items with the same stem get distinct
    names (``scan.cxr.png``, ``scan (2).cxr.png``). ``reserved``: keys (normalised absolute
    paths) already given out by earlier calls of one run (``predict`` exports file by file);
    planned paths are added to it.
    With ``options.pseudonymous_names`` the stem is the input's pseudonym.
    """
    options = options or ExportOptions()
    out = Path(out_dir)
    image_formats = [f for f in parse_formats(formats) if f in FORMATS] if formats else []
    table_formats = [t.lower().lstrip(".") for t in tables]
    for t in table_formats:
        if t not in TABLE_FORMATS:
            raise ValueError(f"unknown table format {t!r}; choose from {', '.join(TABLE_FORMATS)}")
    protected = _as_protected(protected)
    sources = ProtectedFiles(item.source for item in items)
    used = reserved if reserved is not None else set()
    salt = options.effective_salt() if options.pseudonymous_names else ""

    def unused(path: Path) -> Path:
        n = 2
        candidate = path
        while _key(candidate) in used:
            candidate = _numbered(path, n)
            n += 1
        return candidate

    plan: list[PlannedTarget] = []
    for index, item in enumerate(items):
        stem_source = pseudonym(item.source, salt) if options.pseudonymous_names else item.source
        # All formats of one item share one number, so scan (2).cxr.png and scan (2).cxr.pdf go together.
        paths = [out / export_name(stem_source, fmt) for fmt in image_formats]
        n = 2
        while any(_key(p) in used for p in paths):
            paths = [_numbered(out / export_name(stem_source, fmt), n) for fmt in image_formats]
            n += 1
        for fmt, path in zip(image_formats, paths):
            used.add(_key(path))
            refusal = dicom_object_refusal(item.image, fmt)  # an SR/GSPS of a PNG: nothing to refer to
            status = ("refused", refusal) if refusal else _classify(path, protected, sources)
            plan.append(PlannedTarget(index, fmt, path, *status))
    for fmt in dict.fromkeys(table_formats):
        path = unused(out / export_name(table_name, fmt))
        used.add(_key(path))
        plan.append(PlannedTarget(None, fmt, path, *_classify(path, protected, sources)))
    return plan


def _free_beside(path: Path, protected: ProtectedFiles, sources: ProtectedFiles, used: set[str]) -> Path:
    """The first ``name (n).cxr.ext`` that is free, not protected and not given out in this run."""
    for n in range(2, 10_000):
        candidate = _numbered(path, n)
        taken = _key(candidate) in used or os.path.lexists(candidate)
        if not taken and candidate not in protected and candidate not in sources:
            return candidate
    raise ExportError(f"No free file name like {path.name} in {path.parent}.")


def _resolve(
    target: PlannedTarget,
    on_existing: str,
    protected: ProtectedFiles,
    sources: ProtectedFiles,
    used: set[str],
) -> tuple[Path | None, bool, str]:
    """(path to write or None to skip, may replace an existing file of ours, why skipped)."""
    if target.status == "free":
        return target.path, False, ""
    if on_existing == "keep-both":
        return _free_beside(target.path, protected, sources, used), False, ""
    if target.status == "ours" and on_existing == "replace-ours":
        return target.path, True, ""
    return None, False, target.reason


def export_files(
    items: Sequence[ExportItem],
    out_dir: str | os.PathLike[str],
    formats: Iterable[str],
    options: ExportOptions | None = None,
    model_info: BundleInfo | None = None,
    *,
    tables: Iterable[str] = (),
    protected: ProtectedFiles | Iterable[str | os.PathLike[str]] = (),
    on_existing: str = "refuse",
    predictor=None,
    method: str = "gradcam",
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    table_name: str = TABLE_NAME,
    reserved: set[str] | None = None,
) -> ExportReport:
    """Write ``formats`` (png/pdf/dcm/sr/gsps) of every item into ``out_dir``, then the ``tables`` (csv/json).

    One function for one file and for many. ``cancelled()`` is checked before each item (and
    before the tables, which are not written after a cancel); ``progress(done, total)`` is
    called after each item. An item that fails (no prediction and no ``predictor``, a write
    error) is reported in ``errors`` and the others go on. Never writes to a protected or
    source path or over a file this application did not write, whatever ``on_existing`` says:
    "refuse" skips every existing target, "replace-ours" replaces only files that
    :func:`written_by_us`, "keep-both" writes beside any existing file (``name (2).cxr.png``).
    ``options.overwrite`` is ignored here: ``on_existing`` decides. An SR or GSPS of a PNG/JPEG
    (no DICOM to refer to) is refused in the plan and skipped with the reason.
    """
    if on_existing not in ON_EXISTING:
        raise ValueError(f"on_existing must be one of {', '.join(ON_EXISTING)}, not {on_existing!r}")
    options = options or ExportOptions()
    out = Path(out_dir)
    protected = _as_protected(protected)
    sources = ProtectedFiles(item.source for item in items)
    report = ExportReport()
    if not out.is_dir():
        report.errors.append((out, f"The folder {printable(out)} does not exist."))
        return report
    table_list = list(tables)
    used = reserved if reserved is not None else set()
    plan = plan_exports(
        items,
        out,
        formats,
        table_list,
        protected,
        options=options,
        table_name=table_name,
        reserved=used,
    )
    by_item: dict[int, list[PlannedTarget]] = {}
    for target in plan:
        if target.item_index is not None:
            by_item.setdefault(target.item_index, []).append(target)
    salt = options.effective_salt() if options.pseudonymous_names else ""
    records = []
    total = len(items)
    for index, item in enumerate(items):
        if cancelled is not None and cancelled():
            report.cancelled = True
            break
        written_here: list[Path] = []
        failure = ""
        try:
            prediction, explanation = _result_of(item, by_item.get(index, []), options, predictor, method)
            item_options = options
            if item.window is not None or item.invert:
                item_options = replace(options, window=item.window, invert=item.invert)
            for target in by_item.get(index, []):
                refusal = dicom_object_refusal(item.image, target.fmt)
                if refusal:  # never written, not even beside ("keep-both")
                    report.skipped.append((target.path, refusal))
                    continue
                path, may_replace, why = _resolve(target, on_existing, protected, sources, used)
                if path is None:
                    report.skipped.append((target.path, why))
                    continue
                used.add(_key(path))
                try:
                    written_here.append(
                        _write(
                            target.fmt,
                            path,
                            item,
                            prediction,
                            explanation,
                            replace(item_options, overwrite=may_replace),
                            model_info,
                        )
                    )
                except (ExportError, OSError, ValueError) as exc:
                    report.errors.append((path, _message(exc)))
        except _ItemError as exc:
            failure = str(exc)
            report.errors.append((item.source, failure))
            prediction, explanation = None, None
        report.written += written_here
        label = pseudonym(item.source, salt) if options.pseudonymous_names else None
        shown = [p.name if options.pseudonymous_names else str(p) for p in written_here]
        ok = prediction is not None
        result = FileResult(
            str(item.source),
            ok,
            failure,
            prediction,
            item.image,
            explanation,
        )
        record = result_record(result, keep_identifiers=options.keep_identifiers, exports=shown, file_label=label)
        record.update(verdict_record(item.verdict, measured(item.image, item.annotations)))
        record[MARKER_COLUMN] = record.pop(MARKER_COLUMN)  # the marker stays the last key
        records.append(record)
        if progress is not None:
            progress(index + 1, total)

    for target in (t for t in plan if t.item_index is None):
        if report.cancelled:
            report.skipped.append((target.path, "The export was cancelled before the tables were written."))
            continue
        path, may_replace, why = _resolve(target, on_existing, protected, sources, used)
        if path is None:
            report.skipped.append((target.path, why))
            continue
        used.add(_key(path))
        writer = write_csv if target.fmt == "csv" else write_json
        try:
            report.written.append(writer(path, records, overwrite=may_replace))
        except (ExportError, OSError) as exc:
            report.errors.append((path, _message(exc)))
    return report


class _ItemError(Exception):
    """This item cannot be exported (the message is for the user)."""


def _result_of(
    item: ExportItem, targets: list[PlannedTarget], options: ExportOptions, predictor, method: str
) -> tuple[Prediction, Explanation | None]:
    """The item's prediction and, when an image format shows a heat map, its explanation.

    A film the model abstained on gets no heat map: it would show "evidence" for a class the
    reader is not given (the viewer does not offer the overlay for it either).
    """
    prediction, explanation = item.prediction, item.explanation
    wants_map = options.include_heatmap and bool(targets)
    if prediction is None:
        if predictor is None:
            raise _ItemError(f"{printable(item.source.name)} has no AI result and no model is loaded.")
        try:
            if wants_map and explanation is None:
                prediction, explanation = predictor.predict_and_explain(item.image, item.class_index, method)
                return prediction, (None if prediction.abstained else explanation)
            prediction = predictor.predict(item.image)
        except Exception as exc:
            raise _ItemError(f"{printable(item.source.name)} could not be predicted: {exc}") from exc
    if prediction.abstained:
        return prediction, None
    if wants_map and explanation is None and predictor is not None:
        class_index = prediction.class_index if item.class_index is None else item.class_index
        try:
            explanation = predictor.explain(item.image, class_index=class_index, method=method)
        except Exception as exc:
            raise _ItemError(f"{printable(item.source.name)}: the heat map could not be computed: {exc}") from exc
    return prediction, explanation


def _write(
    fmt: str,
    path: Path,
    item: ExportItem,
    prediction: Prediction,
    explanation: Explanation | None,
    options: ExportOptions,
    model_info: BundleInfo | None,
) -> Path:
    marks = item.annotations
    if fmt == "png":
        return write_png(path, item.image, prediction, explanation, options, marks)
    if fmt == "pdf":
        return write_pdf(path, item.image, prediction, explanation, options, model_info, marks, item.verdict)
    if fmt == "sr":
        return write_sr(path, item.image, prediction, options, marks, item.verdict)
    if fmt == "gsps":
        return write_gsps(path, item.image, prediction, explanation, options, marks, item.verdict)
    return write_dicom_sc(path, item.image, prediction, explanation, options, marks)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, ExportError) and exc.strerror:
        return printable(f"{exc.filename or ''}: {exc.strerror}".lstrip(": "))
    return printable(str(exc))
