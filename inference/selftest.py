"""``main.py --self-test``: prove that an installation (from source or frozen) works end to end.

The steps are the ones a frozen build most often gets wrong: TensorFlow loads, the bundled
model loads, a bundled PNG/JPEG decodes, a compressed DICOM decodes through its pixel-data
plugin, prediction and Grad-CAM run, and every export format is written (matplotlib's PDF
backend and fonts, pydicom's writer). The samples include a PNG and a JPEG 2000 DICOM for
this; where a trimmed installation has no compressed DICOM sample, one is made at run time
from the raster sample (JPEG 2000, RLE when that encoder is missing) and read back through
the app's own loader.

Prints one JSON object on standard output (versions, device, timings, results) and returns
0, or prints it with ``"ok": false``, the failed step and the reason, and returns 1.

``CXR_VIEWER_MODEL_DIR`` points the self-test at another model folder (tests use a tiny one).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["run_self_test", "MODEL_DIR_ENV"]

MODEL_DIR_ENV = "CXR_VIEWER_MODEL_DIR"
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_COMPRESSED_SYNTAXES = {
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
}


class _StepError(Exception):
    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


class _Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"ok": False, "versions": {}, "timings_s": {}}
        self.start = time.perf_counter()

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        except _StepError:
            raise
        except Exception as exc:
            raise _StepError(name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.data["timings_s"][name] = round(time.perf_counter() - t0, 3)


def _versions() -> dict[str, str]:
    from importlib import metadata

    import cv2
    import keras
    import matplotlib
    import numpy
    import pydicom
    import tensorflow as tf

    found = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "frozen": str(bool(getattr(sys, "frozen", False))).lower(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "pydicom": pydicom.__version__,
        "matplotlib": matplotlib.__version__,
    }
    # Reported, not imported: inference/ never imports Qt.
    for dist in ("PySide6-Essentials", "PySide6", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _pick_raster(samples: Path) -> Path:
    files = sorted(p for p in samples.iterdir() if p.suffix.lower() in _RASTER_SUFFIXES) if samples.is_dir() else []
    if not files:
        raise _StepError("samples", f"no PNG or JPEG sample found in {samples}")
    pngs = [p for p in files if p.suffix.lower() == ".png"]
    return (pngs or files)[0]


def _compressed_dicom_sample(samples: Path) -> Path | None:
    import pydicom

    for path in sorted(samples.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # a broken sample is reported by the loader later, not here
            continue
        if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) in _COMPRESSED_SYNTAXES:
            return path
    return None


def make_compressed_dicom(pixels, path: Path) -> str:
    """Write ``pixels`` (uint8 gray) as a JPEG 2000 lossless DICOM (RLE as a fallback); returns the syntax name."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.PatientName = "SELF^TEST"
    ds.PatientID = "SELFTEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    last_error: Exception | None = None
    for syntax in (JPEG2000Lossless, RLELossless):
        try:
            ds.compress(syntax, pixels)
        except Exception as exc:  # that encoder is missing here; try the next one
            last_error = exc
            continue
        ds.save_as(path, enforce_file_format=True)
        return syntax.name
    raise RuntimeError(f"no DICOM compression encoder is available ({last_error})")


def run_self_test(model_dir: str | os.PathLike[str] | None = None, out: TextIO | None = None) -> int:
    """Run every step; print the JSON summary to ``out`` (standard output); 0 when all passed."""
    out = out or sys.stdout
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = _Report()
    data = report.data
    try:
        _run(report, model_dir)
        data["ok"] = True
    except _StepError as exc:
        data["failed_step"] = exc.step
        data["error"] = str(exc)
        if exc.__cause__ is not None:
            data["traceback"] = "".join(traceback.format_exception(exc.__cause__))[-4000:]
    data["total_s"] = round(time.perf_counter() - report.start, 3)
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    out.flush()
    if not data["ok"]:
        print(f"self-test failed at {data['failed_step']}: {data['error']}", file=sys.stderr)
    return 0 if data["ok"] else 1


def _run(report: _Report, model_dir: str | os.PathLike[str] | None) -> None:
    import numpy as np

    from inference.paths import bundled_model_dir, samples_dir

    data = report.data
    step: Callable[[str], Any] = report.step

    with step("import_tensorflow"):
        import tensorflow  # noqa: F401  (the step being timed)

        data["versions"] = _versions()

    with step("load_model"):
        chosen = model_dir or os.environ.get(MODEL_DIR_ENV) or bundled_model_dir()
        folder = Path(chosen)
        if not folder.exists():
            kind = "bundled model" if not (model_dir or os.environ.get(MODEL_DIR_ENV)) else "model"
            raise _StepError("load_model", f"{kind} missing at {folder}")
        from inference.predictor import Predictor

        predictor = Predictor(folder)
        data["model"] = {
            "dir": str(folder),
            "name": predictor.info.name,
            "version": predictor.info.version,
            "architecture": predictor.info.architecture,
            "classes": predictor.class_names,
        }
        data["device"] = predictor.device

    from inference.loading import load_image

    samples = samples_dir()
    with tempfile.TemporaryDirectory(prefix="cxr-selftest-") as tmp_name:
        tmp = Path(tmp_name)
        with step("decode_raster"):
            raster_path = _pick_raster(samples)
            raster = load_image(raster_path)
        with step("decode_compressed_dicom"):
            dicom_path = _compressed_dicom_sample(samples)
            made = dicom_path is None
            if made:
                from inference.display import window_image

                dicom_path = tmp / "selftest-compressed.dcm"
                make_compressed_dicom(window_image(raster), dicom_path)
            dicom = load_image(dicom_path)
            if dicom.meta.format != "DICOM" or (made and dicom.shape != raster.shape):
                raise RuntimeError(f"{dicom_path.name} decoded as a {dicom.meta.format} of {dicom.shape}")
            data["dicom_source"] = "made from the raster sample" if made else "bundled sample"

        with step("warm_up"):
            predictor.warm_up()
        cases = []
        for name, image in (("raster", raster), ("dicom", dicom)):
            with step(f"predict_gradcam_{name}"):
                prediction, explanation = predictor.predict_and_explain(image)
                heat = explanation.heatmap_original
                if not np.isfinite(heat).all() or heat.shape != image.shape:
                    raise RuntimeError("the heat map is not finite or does not match the image")
            cases.append((image, prediction, explanation))
        data["results"] = [
            {
                "file": Path(image.meta.path).name,
                "format": image.meta.format,
                "transfer_syntax": image.meta.transfer_syntax or None,
                "size": [image.meta.width, image.meta.height],
                "label": prediction.label,
                "probabilities": {k: round(v, 6) for k, v in prediction.probabilities.items()},
                "gradcam_peak": explanation.peak(),
            }
            for image, prediction, explanation in cases
        ]

        with step("exports"):
            data["exports"] = _write_exports(tmp, predictor, cases)


def _write_exports(tmp: Path, predictor, cases) -> dict[str, int]:
    import secrets

    import pydicom

    from inference.export import ExportItem, ExportOptions, export_files, result_record, write_csv, write_json
    from inference.predictor import FileResult

    written = []
    for i, (image, prediction, explanation) in enumerate(cases):
        item = ExportItem(Path(f"case{i}.png"), image, prediction, explanation)
        # A throw-away salt: the self-test must not create this installation's salt file.
        options = ExportOptions(salt=secrets.token_hex(16))
        report = export_files([item], tmp, ("png", "pdf", "dcm"), options, model_info=predictor.info)
        if report.errors or report.skipped:
            raise RuntimeError("; ".join(why for _, why in report.errors + report.skipped))
        written += report.written
    records = [
        result_record(FileResult(im.meta.path, True, "", p, im, e), device=predictor.device) for im, p, e in cases
    ]
    written.append(write_json(tmp / "summary.json", records))
    written.append(write_csv(tmp / "summary.csv", records))
    for path in written:
        if path.stat().st_size == 0:
            raise RuntimeError(f"{path.name} is empty")
        if path.suffix == ".pdf" and not path.read_bytes().startswith(b"%PDF"):
            raise RuntimeError(f"{path.name} is not a PDF")
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            if ds.pixel_array.ndim != 3 or str(ds.PatientName):
                raise RuntimeError(f"{path.name} does not read back as an anonymous RGB capture")
    return {p.name: p.stat().st_size for p in written}
