"""``main.py predict``: headless prediction with progress, JSON/CSV output and exports.

Usage::

    python main.py predict PATH... [--model DIR] [--json OUT|-] [--csv OUT]
                           [--export-dir DIR] [--formats png,pdf,dcm] [--gradcam]
                           [--method gradcam|gradcam++] [--batch-size N]
                           [--keep-identifiers] [--overwrite]

Each PATH is a file or a folder; folders are searched recursively for PNG, JPEG and
DICOM files (by suffix, or by content for files without one), hidden files and folders
skipped. Without ``--json`` and ``--csv`` the JSON goes to standard output. A progress
bar is drawn on standard error when it is a terminal. Exports (``--export-dir``) are named
``<name>.cxr.png``, ``.cxr.pdf``, ``.cxr.dcm`` and keep the folder structure below each
PATH folder; with ``--gradcam`` they carry the heat map.

Exit status: 0 when every file was predicted (and exported), 1 when any file failed
(the others are still predicted and reported), 2 for a usage error or a model that
cannot be loaded.

JSON output: a list with one object per file, in the order the files were found::

    {
      "file": "scans/a.dcm",            # the path as found
      "ok": true,                        # false: the file could not be read, predicted or exported
      "error": null,                     # why, when ok is false (written for the person reading it)
      "label": "Normal",                 # the predicted class; null when the file could not be read
      "class_index": 1,                  # its position in the model's class list
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
      "exports": ["out/a.cxr.png", "out/a.cxr.pdf", "out/a.cxr.dcm"]     # with --export-dir
    }

The CSV has one row per file with the same content flattened: ``file, ok, error, label,
p_<class>..., model_name, model_version, device, image_*, gradcam_*, exports``.
Patient name, ID and birth date appear nowhere unless ``--keep-identifiers`` is given.

TensorFlow is imported only when the command runs, so ``main.py --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["register", "run_predict", "find_images"]


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
        help="export formats, comma-separated: png,pdf,dcm (default: all three; needs --export-dir)",
    )
    p.add_argument("--gradcam", action="store_true", help="compute Grad-CAM (JSON peak, heat map in exports)")
    p.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam", help="heat-map method")
    p.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="images per model call")
    p.add_argument("--keep-identifiers", action="store_true", help="keep patient name, ID and birth date in outputs")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--colormap", default="jet", help="heat-map colour map for exports (default: jet)")
    p.add_argument("--opacity", type=_fraction_arg, default=0.4, help="heat-map opacity in exports, 0-1")
    p.set_defaults(func=run_predict)


# ------------------------------------------------------------------------------ finding files


def _hidden(part: str) -> bool:
    return part.startswith(".")


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Path | None]]:
    """Every file to predict, as (file, the folder argument it was found under or None).

    Files named explicitly are kept even if their suffix is unusual (the loader sniffs
    content and reports what it finds); folders contribute only supported, visible files,
    in sorted order. Missing paths are kept too, so that they are reported, not ignored.
    """
    from inference.loading import is_supported_file

    found: list[tuple[Path, Path | None]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(_hidden(part) for part in rel.parts) or not child.is_file() or not is_supported_file(child):
                    continue
                if child.resolve() not in seen:
                    seen.add(child.resolve())
                    found.append((child, path))
        elif path.resolve() not in seen:
            seen.add(path.resolve())
            found.append((path, None))
    return found


def _export_base(export_dir: Path, file: Path, root: Path | None, used: set[Path]) -> Path:
    """``DIR/<subfolders>/<stem>.cxr``, unique within this run (``a.png`` and ``a.dcm`` both exist)."""
    rel = file.relative_to(root) if root is not None else Path(file.name)
    base = export_dir / rel.parent / f"{rel.stem}.cxr"
    n = 2
    candidate = base
    while candidate in used:
        candidate = base.with_name(f"{rel.stem} ({n}).cxr")
        n += 1
    used.add(candidate)
    return candidate


# ------------------------------------------------------------------------------ the command


def _fail(message: str) -> int:
    print(f"predict: error: {message}", file=sys.stderr)
    return 2


def _check_output(target: str | None, overwrite: bool) -> str | None:
    if target and target != "-":
        p = Path(target)
        if p.exists() and not overwrite:
            return f"{p} already exists; choose another name or pass --overwrite"
        if not p.parent.exists():
            return f"the folder {p.parent} does not exist"
    return None


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict``; returns the exit status (0 all well, 1 some file failed, 2 usage/model error)."""
    if args.formats and not args.export_dir:
        return _fail("--formats needs --export-dir")
    from inference.export.many import FORMATS, parse_formats

    try:
        formats = parse_formats(args.formats) if args.formats else list(FORMATS)
    except ValueError as exc:
        return _fail(str(exc))
    outputs = [("--json", args.json), ("--csv", args.csv)]
    if sum(1 for _, v in outputs if v == "-") > 1:
        return _fail("only one of --json and --csv can go to standard output")
    for _, target in outputs:
        problem = _check_output(target, args.overwrite)
        if problem:
            return _fail(problem)
    if args.colormap:
        from inference.overlay import COLORMAPS

        if args.colormap not in COLORMAPS:
            return _fail(f"unknown colour map {args.colormap!r}; choose from {', '.join(COLORMAPS)}")
    files = find_images(args.paths)
    if not files:
        return _fail(f"no PNG, JPEG or DICOM files found in {', '.join(args.paths)}")

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
    return _predict_all(args, predictor, files, formats)


def _predict_all(
    args: argparse.Namespace, predictor, files: Sequence[tuple[Path, Path | None]], formats: list[str]
) -> int:
    from tqdm import tqdm

    from inference.export import ExportError, ExportOptions, export_all, result_record, write_csv, write_json
    from inference.export.tables import records_to_csv

    export_dir = Path(args.export_dir) if args.export_dir else None
    options = ExportOptions(
        keep_identifiers=args.keep_identifiers,
        overwrite=args.overwrite,
        colormap=args.colormap,
        opacity=args.opacity,
    )
    if export_dir is not None:
        try:
            export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(f"cannot create {export_dir}: {exc.strerror or exc}")

    roots = {str(f): root for f, root in files}
    model = (predictor.info.name, predictor.info.version)
    used: set[Path] = set()
    records = []
    bar = tqdm(total=len(files), file=sys.stderr, unit="image", disable=not sys.stderr.isatty(), leave=False)
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
                base = _export_base(export_dir, Path(result.file), roots.get(result.file), used)
                exports = []
                try:
                    base.parent.mkdir(parents=True, exist_ok=True)
                    for fmt in formats:  # one at a time, so the record lists what was written before a failure
                        written = export_all(
                            base, result.image, result.prediction, result.explanation, [fmt], options, predictor.info
                        )
                        exports += [str(p) for p in written]
                except (ExportError, OSError) as exc:
                    result.ok, result.error = False, f"export failed: {exc}"
            records.append(result_record(result, model, predictor.device, args.keep_identifiers, exports))
            result.image = None  # the next batch is already decoded; do not keep this one alive too
            bar.update(1)
    finally:
        bar.close()

    failed = sum(1 for r in records if not r["ok"])
    try:
        if args.csv and args.csv != "-":
            write_csv(args.csv, records, args.overwrite)
        if args.json and args.json != "-":
            write_json(args.json, records, args.overwrite)
    except (ExportError, OSError) as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
    if args.csv == "-":
        sys.stdout.write(records_to_csv(records))
    elif args.json == "-" or not (args.json or args.csv):
        json.dump(records, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    sys.stdout.flush()
    print(
        f"predict: {len(records) - failed} of {len(records)} files predicted with "
        f"{predictor.info.display_name} on {predictor.device}" + (f"; {failed} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
