"""The bad-input corpus: files the loader must refuse with a clear :class:`ImageLoadError`.

``make_bad_inputs(directory)`` writes them and returns ``{name: path}``; ``EXPECTED_WORDS``
says which words the refusal message must contain for each (lower case), so the loader's
tests and the viewer's tests (an error dialog instead of a crash) share one definition.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from tests.dicom_factory import make_dicom, make_dicom_without_pixels, save_dicom

__all__ = ["EXPECTED_WORDS", "make_bad_inputs", "png_chunk", "valid_png_bytes", "valid_jpeg_bytes"]

# name -> words (lower case) the loader's message must contain.
EXPECTED_WORDS: dict[str, tuple[str, ...]] = {
    "empty": ("empty",),
    "truncated_png": ("truncated",),
    "truncated_jpeg": ("truncated",),
    "truncated_dicom": ("truncated",),
    "text_as_dcm": ("not an image", "text file"),
    "dicom_without_pixels": ("no image", "structured report"),
    "huge_png_header": ("too large", "100000 x 100000"),
    "huge_jpeg_header": ("too large", "65535 x 65535"),
    "huge_dicom_header": ("too large",),
    "random_bytes": ("not a png, jpeg or dicom",),
}


def _test_pattern(size: int = 64) -> np.ndarray:
    """A gradient with a bright square: enough structure that truncation is visible to codecs."""
    y, x = np.mgrid[0:size, 0:size]
    img = ((x + y) * (255 / (2 * size - 2))).astype(np.uint8)
    img[size // 4 : size // 2, size // 4 : size // 2] = 255
    return img


def valid_png_bytes(size: int = 64) -> bytes:
    ok, buf = cv2.imencode(".png", _test_pattern(size))
    assert ok
    return buf.tobytes()


def valid_jpeg_bytes(size: int = 64) -> bytes:
    ok, buf = cv2.imencode(".jpg", _test_pattern(size), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC (for hand-made headers)."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _huge_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 8-bit gray, 10 gigapixels
    idat = zlib.compress(b"\x00" * 1024)  # a first scanline's worth: the rest is "missing"
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _huge_jpeg() -> bytes:
    """A valid small JPEG whose frame header (SOF0) is rewritten to claim 100000 x 100000."""
    data = bytearray(valid_jpeg_bytes())
    sof = data.find(b"\xff\xc0")
    # JPEG sizes are 16-bit: claim the largest a JPEG can hold (65535 x 65535 = 4.3 gigapixels).
    struct.pack_into(">HH", data, sof + 5, 65535, 65535)
    return bytes(data)


def make_bad_inputs(directory: str | Path) -> dict[str, Path]:
    """Write the corpus into ``directory`` (created if needed); returns {name: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(name: str, filename: str, data: bytes) -> None:
        path = directory / filename
        path.write_bytes(data)
        files[name] = path

    put("empty", "empty.png", b"")
    png = valid_png_bytes()
    put("truncated_png", "truncated.png", png[: len(png) // 2])
    jpeg = valid_jpeg_bytes()
    put("truncated_jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2])

    full = directory / "_full.dcm"
    make_dicom(full, (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096), bits_stored=12)
    dicom = full.read_bytes()
    full.unlink()
    put("truncated_dicom", "truncated.dcm", dicom[: len(dicom) - 3000])  # cut inside the pixel data

    put(
        "text_as_dcm",
        "report.dcm",
        b"CHEST PA\r\nFindings: no focal consolidation. Heart size normal.\r\nImpression: normal chest.\r\n",
    )
    make_dicom_without_pixels(directory / "structured_report.dcm")
    files["dicom_without_pixels"] = directory / "structured_report.dcm"
    put("huge_png_header", "huge.png", _huge_png())
    put("huge_jpeg_header", "huge.jpg", _huge_jpeg())

    huge = directory / "_huge.dcm"
    ds = make_dicom(None, np.zeros((4, 4), np.uint16))
    ds.Rows, ds.Columns = 65535, 65535  # the header claims 4.3 gigapixels; the data holds 16
    save_dicom(ds, huge)
    put("huge_dicom_header", "huge.dcm", huge.read_bytes())
    huge.unlink()

    rng = np.random.default_rng(20200401)
    noise = rng.bytes(4096)
    put("random_bytes", "noise.dcm", b"\x00\x01" + noise)  # leading bytes rule out every signature
    return files
