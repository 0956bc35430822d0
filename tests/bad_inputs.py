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

__all__ = [
    "BOMB_SIDE",
    "EXPECTED_WORDS",
    "codestream_bombs",
    "encapsulated_dicom",
    "make_bad_inputs",
    "png_chunk",
    "valid_png_bytes",
    "valid_jpeg_bytes",
]

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
    # Size bombs inside compressed data: the header says 64 x 64, the codestream 60000 x 60000.
    "jpeg_codestream_bomb": ("too large", "60000 x 60000"),
    "jpegls_codestream_bomb": ("too large", "60000 x 60000"),
    "j2k_codestream_bomb": ("too large", "60000 x 60000"),
    "jp2_codestream_bomb": ("too large", "60000 x 60000"),
    "jpeg_second_frame_header": ("too large",),
    "codestream_size_mismatch": ("does not match", "64 x 64"),
    # Pixels that cannot be shown (issue 17): each gave a black model input or a raw Python error.
    "nan_pixels": ("not numbers",),
    "blank_png": ("blank",),
    "rescale_out_of_range": ("rescale slope", "out of range"),
    "pixel_data_empty": ("image data", "empty"),
    "grey_filled_jpeg": ("damaged", "grey"),
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


BOMB_SIDE = 60_000  # what the crafted codestreams claim (3.6 gigapixels)


def _patch_jpeg_sof(data: bytes, width: int, height: int, marker: bytes = b"\xff\xc0") -> bytes:
    out = bytearray(data)
    at = out.find(marker)
    struct.pack_into(">HH", out, at + 5, height, width)
    return bytes(out)


def jpegls_codestream(width: int, height: int) -> bytes:
    """A minimal JPEG-LS stream (SOI, SOF55, SOS, a few bytes of scan, EOI) for size checks only."""
    sof55 = b"\xff\xf7" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x00\x00"
    return b"\xff\xd8" + sof55 + sos + b"\x00" * 64 + b"\xff\xd9"


def j2k_codestream(size: int = 64, jp2: bool = False) -> bytes:
    from openjpeg import encode

    return encode(_test_pattern(size), codec_format=1 if jp2 else 0)


def _patch_siz(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    at = out.find(b"\xff\x4f\xff\x51") + 2  # SOC, then SIZ
    struct.pack_into(">II", out, at + 6, width, height)
    struct.pack_into(">II", out, at + 22, width, height)  # one tile, or OpenJPEG refuses the tile count
    return bytes(out)


def encapsulated_dicom(frame: bytes, transfer_syntax: str, rows: int = 64, columns: int = 64) -> bytes:
    """A DICOM file whose header says ``rows`` x ``columns`` around one compressed ``frame``."""
    import tempfile

    from pydicom.encaps import encapsulate

    ds = make_dicom(None, _test_pattern(max(rows, columns))[:rows, :columns])
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.dcm"
        save_dicom(ds, path)
        return path.read_bytes()


def codestream_bombs() -> dict[str, bytes]:
    """Small files whose compressed data claims 60000 x 60000 pixels (issue 17, critical)."""
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

    side = BOMB_SIDE
    jpeg = _patch_jpeg_sof(valid_jpeg_bytes(), side, side)
    jp2 = j2k_codestream(jp2=True)  # ihdr says 64 x 64; only the codestream inside claims more
    return {
        "jpeg_codestream_bomb": encapsulated_dicom(jpeg, JPEGBaseline8Bit),
        "jpegls_codestream_bomb": encapsulated_dicom(jpegls_codestream(side, side), JPEGLSLossless),
        "j2k_codestream_bomb": encapsulated_dicom(_patch_siz(j2k_codestream(), side, side), JPEG2000Lossless),
        "jp2_codestream_bomb": encapsulated_dicom(_patch_siz(jp2, side, side), JPEG2000Lossless),
    }


def _jpeg_with_second_frame_header() -> bytes:
    """A valid JPEG with a second SOF0 (claiming 60000 x 60000) just before its scan: Pillow
    takes the size from the last frame header, the first one is harmless."""
    data = valid_jpeg_bytes()
    sos = data.find(b"\xff\xda")
    sof = data.find(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    second = _patch_jpeg_sof(data[sof : sof + 2 + length], BOMB_SIDE, BOMB_SIDE)
    return data[:sos] + second + data[sos:]


def _grey_filled_jpeg() -> bytes:
    """A JPEG whose scan is cut in the middle but still ends with EOI: libjpeg fills the rest flat."""
    img = _test_pattern(256)
    img[::7, :] = 30  # texture in every row, so only the decoder's fill is flat
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = buf.tobytes()
    sos = data.find(b"\xff\xda")
    cut = sos + (len(data) - sos) // 3
    return data[:cut] + b"\xff\xd9"


def _float_dicom_with_nan() -> bytes:
    import tempfile

    ds = make_dicom(None, _test_pattern().astype(np.uint16))
    values = _test_pattern().astype(np.float32)
    values[10, 10] = np.nan
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.add_new(0x7FE00008, "OF", values.tobytes())  # Float Pixel Data
    with tempfile.TemporaryDirectory() as tmp:
        save_dicom(ds, Path(tmp) / "f.dcm")
        return (Path(tmp) / "f.dcm").read_bytes()


def _dicom_bytes(edit) -> bytes:
    import tempfile

    ds = make_dicom(None, (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096), bits_stored=12)
    edit(ds)
    with tempfile.TemporaryDirectory() as tmp:
        save_dicom(ds, Path(tmp) / "d.dcm")
        return (Path(tmp) / "d.dcm").read_bytes()


def _set(**values):
    def edit(ds) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return edit


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

    for name, data in codestream_bombs().items():
        put(name, f"{name}.dcm", data)
    put("jpeg_second_frame_header", "two_headers.jpg", _jpeg_with_second_frame_header())
    from pydicom.uid import JPEGBaseline8Bit

    put("codestream_size_mismatch", "mismatch.dcm", encapsulated_dicom(valid_jpeg_bytes(80), JPEGBaseline8Bit))
    put("nan_pixels", "nan.dcm", _float_dicom_with_nan())
    blank = np.full((64, 64), 7, np.uint8)
    ok, buf = cv2.imencode(".png", blank)
    assert ok
    put("blank_png", "blank.png", buf.tobytes())
    put("rescale_out_of_range", "rescale.dcm", _dicom_bytes(_set(RescaleSlope="1e30", RescaleIntercept="0")))
    put("pixel_data_empty", "empty_pixels.dcm", _dicom_bytes(_set(PixelData=b"")))
    put("grey_filled_jpeg", "grey_fill.jpg", _grey_filled_jpeg())
    return files
