"""Time to open and window the images a reader meets most (median of several runs).

    .venv/bin/python benchmarks/bench_loading.py [--runs 7]

Cases: a generated 3000 x 3000 16-bit DICOM (a large detector image, uncompressed), the
NEMA chest radiograph RG1 as JPEG 2000 lossless from pydicom-data (skipped if that package
is not installed), and a generated 2000 x 2000 JPEG. "load" is ``load_image``; "window" is
``window_image`` (the 8-bit picture the screen shows); "total" is both, timed together.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from inference.display import window_image  # noqa: E402
from inference.loading import load_image  # noqa: E402


def _synthetic_chest(height: int, width: int, top: int, seed: int = 0) -> np.ndarray:
    """Smooth anatomy-like shading plus detector noise (compresses and windows like the real thing)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= height
    x /= width
    body = np.exp(-(((x - 0.5) / 0.35) ** 4) - ((y - 0.55) / 0.45) ** 4)
    lungs = np.exp(-(((x - 0.3) / 0.12) ** 2) - ((y - 0.45) / 0.22) ** 2) + np.exp(
        -(((x - 0.7) / 0.12) ** 2) - ((y - 0.45) / 0.22) ** 2
    )
    img = 0.15 + 0.7 * body - 0.35 * lungs
    noise = np.random.default_rng(seed).normal(0, 0.01, size=(height, width)).astype(np.float32)
    return np.clip((img + noise) * top, 0, top)


def _make_cases(directory: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dicom_factory import make_dicom  # the tests' DICOM generator

    cases: dict[str, Path] = {}
    dicom = directory / "large16.dcm"
    pixels = _synthetic_chest(3000, 3000, 65535).astype(np.uint16)
    make_dicom(dicom, pixels, bits_stored=16, window=(30000, 50000))
    cases["3000x3000 16-bit DICOM (uncompressed)"] = dicom

    try:
        from pydicom.data import get_testdata_file

        j2k = get_testdata_file("RG1_J2KR.dcm", download=False)
    except Exception:
        j2k = None
    if j2k:
        cases["RG1 chest 1841x1955 15-bit DICOM (JPEG 2000 lossless)"] = Path(j2k)
    else:
        print("pydicom-data is not installed: skipping the JPEG 2000 case", file=sys.stderr)

    jpeg = directory / "photo.jpg"
    ok, buf = cv2.imencode(".jpg", _synthetic_chest(2000, 2000, 255, seed=1).astype(np.uint8))
    assert ok
    jpeg.write_bytes(buf.tobytes())
    cases["2000x2000 8-bit JPEG"] = jpeg
    return cases


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: imports, plugin discovery, page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (median reported)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-loading-") as tmp:
        cases = _make_cases(Path(tmp))
        print(f"{'case':58s} {'load':>9s} {'window':>9s} {'total':>9s}")
        for name, path in cases.items():
            image = load_image(path)
            load = _median_seconds(lambda p=path: load_image(p), args.runs)
            window = _median_seconds(lambda im=image: window_image(im), args.runs)
            total = _median_seconds(lambda p=path: window_image(load_image(p)), args.runs)
            print(f"{name:58s} {load * 1000:7.0f}ms {window * 1000:7.0f}ms {total * 1000:7.0f}ms")
    print(f"median of {args.runs} runs after one warm-up; numpy {np.__version__}, OpenCV {cv2.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
