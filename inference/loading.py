"""Open any supported file (PNG, JPEG, DICOM) as one :class:`XRayImage`.

``load_image`` is the only way the app reads pixels from disk. Its promises:

* The format is recognised from the bytes, never from the file name: PACS exports often
  have no extension, and a ``.dcm`` that is really a PNG is simply a PNG.
* Pixels keep their full depth (16-bit PNG stays uint16; DICOM after the modality
  transform), colour is reduced to gray by luminance, and DICOM MONOCHROME1 is kept as
  stored: display and preprocessing invert it through ``meta.inverted``.
* The image size is checked from the header (PNG IHDR, JPEG SOF, DICOM Rows/Columns)
  before anything is decoded, so a hostile or broken header cannot make us allocate
  gigabytes; so is the size written inside compressed DICOM pixel data (JPEG SOF/DHP,
  JPEG-LS SOF55/LSE, JPEG 2000 SIZ and JP2 ihdr, see :mod:`inference.codestream`), which
  is what the decoders allocate by, and what a deflated data set expands to.
* Pixels are usable: NaN or infinite values, a blank image (one value almost everywhere)
  and a JPEG whose decoder had to fill its lower rows with one shade are refused. A stored
  DICOM window that would show almost nothing is replaced by the percentile window, and
  ``meta.window_note`` says why.
* Exactly one exception escapes, :class:`ImageLoadError`, whatever the bytes, with a
  message written for the person at the screen (a radiologist), not for a programmer.
  Problems that do not prevent a faithful image (extra padding after the pixel data, an
  unreadable EXIF block) are logged and listed in ``image.extra["warnings"]``, per file
  even when several threads decode at once (see :mod:`inference.file_warnings`).

Decoders: PNG through OpenCV (keeps 16-bit colour, which Pillow truncates to 8 bits);
JPEG through Pillow (applies the EXIF orientation and reads Adobe CMYK correctly, which
OpenCV's unchanged-depth mode does not); DICOM through pydicom 3 and its pixel-data
plugins (pylibjpeg for JPEG, JPEG-LS and JPEG 2000; RLE is built in).
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import threading
from pathlib import Path

import cv2
import numpy as np

from inference import file_warnings
from inference.codestream import FrameSize, codestream_sizes, jpeg_sizes
from inference.display import window_problem
from inference.image import ImageLoadError, ImageMeta, Window, XRayImage

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "SUPPORTED_SUFFIXES",
    "is_supported_file",
    "load_image",
    "sniff_format",
]

log = logging.getLogger(__name__)

# Suffixes offered by file dialogs and folder scans. Files without a suffix are sniffed too
# (see is_supported_file); the suffix never decides how a file is decoded.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

# The largest digital radiographs are about 4300 x 4300 (43 x 43 cm at 0.1 mm); a limit
# five times that per side still refuses headers that would need gigabytes to decode.
MAX_SIDE = 20_000
MAX_PIXELS = 100_000_000  # per frame
MAX_FILE_BYTES = 2 * 1024**3
HEAD_BYTES = 4096  # enough for every signature we look at

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

# Value representations, used to recognise a DICOM data set written without preamble/meta.
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)

# Packages that provide a decoder, by transfer syntax UID, for the "no decoder" message.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE Lossless
}

_PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate")
_STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "SeriesDescription",
    "InstitutionName",
    "ReferringPhysicianName",
    "Modality",
)
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data
_TAG_VALUE_CHARS = 200


# Exceptions that must keep their meaning (the user pressed Ctrl+C, the app is exiting).
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


class _RefusedError(Exception):
    """Internal: a reason to refuse the file, turned into ImageLoadError at the boundary."""


# --------------------------------------------------------------------------- public API


def sniff_format(head: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"DICOM"`` from the first bytes of a file, else ``None``.

    ``head`` should hold at least the first 132 bytes (DICOM's "DICM" sits at offset 128).
    A DICOM data set written without preamble and file meta (older modalities and some
    PACS exports) is recognised by its first element: group 0x0002 or 0x0008, little endian.
    """
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if head[128:132] == b"DICM":
        return "DICOM"
    if _looks_like_bare_dicom(head):
        return "DICOM"
    return None


def is_supported_file(path: str | os.PathLike[str]) -> bool:
    """Whether a folder scan should offer ``path``: a supported suffix, or no suffix and
    content that sniffs as an image. Never raises (unreadable files are simply skipped)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SUPPORTED_SUFFIXES:
        return True
    if suffix:
        return False
    try:
        if not p.is_file():
            return False
        with p.open("rb") as fh:
            return sniff_format(fh.read(HEAD_BYTES)) is not None
    except (OSError, ValueError):
        return False


def load_image(path: str | os.PathLike[str]) -> XRayImage:
    """Read a PNG, JPEG or DICOM file; raises only :class:`ImageLoadError`."""
    try:
        p = Path(path)
    except TypeError as exc:
        raise ImageLoadError(f"Cannot open {path!r}: not a file path") from exc
    label = f'"{p.name or p}"'
    try:
        return _load(p)
    except ImageLoadError:
        raise
    except _RefusedError as exc:
        raise ImageLoadError(f"Cannot open {label}: {exc}") from None
    except MemoryError:
        raise ImageLoadError(f"Cannot open {label}: there is not enough memory to open this image") from None
    except _FATAL:
        raise
    except BaseException as exc:  # the boundary: whatever a decoder throws becomes our one exception
        # BaseException, not Exception: the Rust decoders (pylibjpeg-rle) panic with pyo3's
        # PanicException, which derives from BaseException. The programmer's text goes to the
        # log; the person at the screen gets a sentence (never "NoneType has no len()").
        log.info("%s: %s: %s", p.name, type(exc).__name__, exc)
        raise ImageLoadError(f"Cannot open {label}: {_plain_reason(exc)}") from exc


def _plain_reason(exc: BaseException) -> str:
    """A sentence for an exception no check of ours anticipated, by what usually causes it."""
    text, kind = str(exc), type(exc).__name__
    if kind == "BytesLengthException":  # pydicom: a value's length does not fit its VR
        detail = "a header value has the wrong length for its type"
    elif "Value Representation" in text:
        detail = "a header element has an unknown type (VR)"
    elif "No tag to read" in text:
        detail = "its data ends early or is cut off"
    elif "Palette Color Lookup Table" in text:
        detail = "it says PALETTE COLOR but its palette is missing"
    elif isinstance(exc, OverflowError):
        detail = "a number in its header is out of range"
    elif isinstance(exc, (EOFError, struct.error, IndexError)):
        detail = "its data ends early or is cut off"
    elif isinstance(exc, (TypeError, AttributeError, KeyError)):
        detail = "a required header value is missing, empty or of the wrong kind"
    elif isinstance(exc, (ValueError, ArithmeticError)):
        detail = "a header value is invalid"
    else:
        detail = ""
    base = "the file is damaged or uses a variant this program cannot read"
    return f"{base} ({detail})" if detail else base


# --------------------------------------------------------------------------- reading the file


def _load(path: Path) -> XRayImage:
    data = _read_bytes(path)
    kind = sniff_format(data[:HEAD_BYTES])
    if kind == "PNG":
        return _load_png(path, data)
    if kind == "JPEG":
        return _load_jpeg(path, data)
    if kind == "DICOM":
        return _load_dicom(path, data)
    raise _RefusedError(_describe_non_image(data[:HEAD_BYTES]))


def _read_bytes(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(f'File not found: "{path}"') from None
    except PermissionError:
        raise _RefusedError("permission denied (your user account may not read this folder)") from None
    except OSError as exc:
        raise _RefusedError(f"the file cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # e.g. a NUL character in the name
        raise _RefusedError("the file name is not valid") from None
    if stat.S_ISDIR(st.st_mode):
        raise _RefusedError("it is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise _RefusedError("it is not a regular file (a device, pipe or socket)")
    if st.st_size == 0:
        raise _RefusedError("the file is empty (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise _RefusedError(f"the file is too large ({st.st_size / 1024**3:.1f} GB; the limit is 2 GB)")
    try:
        with path.open("rb") as fh:
            data = fh.read()
    except PermissionError:
        raise _RefusedError("permission denied (your user account may not read this file)") from None
    except OSError as exc:
        raise _RefusedError(f"the file cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise _RefusedError("the file is empty (0 bytes)")
    return data


def _check_size(width: int, height: int, frames: int = 1) -> None:
    if width <= 0 or height <= 0:
        raise _RefusedError(f"the header describes an image of {width} x {height} pixels; the file is corrupt")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        what = f"{width} x {height} pixels" + (f" x {frames} frames" if frames > 1 else "")
        raise _RefusedError(
            f"the image is too large ({what}; the limit is {MAX_SIDE} pixels per side and "
            f"{MAX_PIXELS // 1_000_000} megapixels); the header may be corrupt"
        )


def _looks_like_bare_dicom(head: bytes) -> bool:
    if len(head) < 12:
        return False
    if head[:2] in (b"\x00\x02", b"\x00\x08"):  # big endian: explicit VR only
        return head[4:6] in _DICOM_VRS
    if head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if head[4:6] in _DICOM_VRS:  # explicit VR
        return True
    # Implicit VR: a 4-byte length; 4 for a group length element, else a short header value.
    (element,) = struct.unpack_from("<H", head, 2)
    (length,) = struct.unpack_from("<I", head, 4)
    return length == 4 if element == 0 else length < 1024


def _describe_non_image(head: bytes) -> str:
    """Say what a file that is not a PNG/JPEG/DICOM looks like, in plain words."""
    unsupported_images = (
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
        (b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    )
    for signature, what in unsupported_images:
        if head.startswith(signature):
            return f"it is {what}, which is not supported (open PNG, JPEG or DICOM files)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it is a WebP image, which is not supported (open PNG, JPEG or DICOM files)"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in (12, 40, 56, 108, 124):
        return "it is a BMP image, which is not supported (open PNG, JPEG or DICOM files)"
    others = (
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive (unpack it first)"),
        (b"\x1f\x8b", "a gzip-compressed file (unpack it first)"),
        (b"7z\xbc\xaf", "a 7-Zip archive (unpack it first)"),
        (b"\x7fELF", "a program"),
        (b"MZ", "a Windows program"),
    )
    for signature, what in others:
        if head.startswith(signature):
            return f"it is not an image but {what}"
    text = _as_text(head)
    if text is not None:
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "it is not an image but a web page (HTML)"
        if lowered.startswith("<?xml"):
            return "it is not an image but an XML file"
        return "it is not an image but a text file"
    return "it is not a PNG, JPEG or DICOM image (the content is not recognised)"


def _as_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # only a character cut at the end of the sample is allowed
            return None
        text = head[: exc.start].decode("utf-8")
    if not text:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return text if printable >= 0.97 * len(text) else None


def _short(text: str, limit: int = _TAG_VALUE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _to_gray(pixels: np.ndarray, order: str) -> np.ndarray:
    """Luminance (ITU-R BT.601, as Pillow and OpenCV use) of an (H, W, C) image.

    ``order`` is "RGB" or "BGR"; a 4th channel (alpha) is ignored, a 2-channel image is
    gray + alpha. The result keeps the input's dtype (rounded) so 16-bit colour stays 16-bit.
    """
    if pixels.ndim == 2:
        return pixels
    channels = pixels.shape[2]
    if channels == 1:
        return pixels[..., 0]
    if channels == 2:
        return np.ascontiguousarray(pixels[..., 0])
    color = pixels[..., :3]
    if pixels.dtype in (np.uint8, np.uint16, np.float32):
        code = cv2.COLOR_RGB2GRAY if order == "RGB" else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(np.ascontiguousarray(color), code)
    weights = np.array([0.299, 0.587, 0.114] if order == "RGB" else [0.114, 0.587, 0.299], dtype=np.float64)
    gray = color.astype(np.float64) @ weights
    if np.issubdtype(pixels.dtype, np.integer):
        return np.rint(gray).astype(pixels.dtype)
    return gray.astype(np.float32)


# An image whose most common value covers this share of its pixels shows nothing: a blank
# export, a test pattern, a decoder's grey fill. No radiograph comes near it.
MAX_SAME_VALUE_SHARE = 0.998


def _check_pixels(pixels: np.ndarray) -> None:
    """Refuse pixels that cannot be shown or fed to a model: not finite, or (almost) one value."""
    if pixels.size == 0:
        raise _RefusedError("the image has no pixels; the file is damaged")
    if pixels.dtype.kind == "f":
        finite = np.isfinite(pixels)
        if not finite.all():
            bad = pixels.size - int(np.count_nonzero(finite))
            raise _RefusedError(
                f"{bad:,} of its {pixels.size:,} pixel values are not numbers (NaN) or infinite; "
                "the file is damaged, or its Rescale Slope/Intercept are out of range"
            )
    lo, hi = pixels.min(), pixels.max()
    if lo == hi:
        raise _RefusedError(f"the image is blank: every pixel has the same value ({_number(lo)})")
    if pixels.dtype.kind == "f" and float(hi) - float(lo) <= 1e-6 * max(1.0, abs(float(hi)), abs(float(lo))):
        raise _RefusedError("the image is blank: its pixel values differ by less than one part in a million")
    share = _same_value_share(pixels)
    if share >= MAX_SAME_VALUE_SHARE:
        raise _RefusedError(
            f"the image is practically blank: {share:.1%} of its pixels have the same value "
            "(it may be a blank export, or its data may be damaged)"
        )


def _same_value_share(pixels: np.ndarray) -> float:
    """The share of the most common value, from a strided sample of at most ~400k pixels."""
    flat = pixels.ravel()
    if flat.size > 400_000:
        flat = flat[:: flat.size // 200_000]
    if flat.dtype in (np.uint8, np.uint16):
        counts = np.bincount(flat)
    else:
        _, counts = np.unique(flat, return_counts=True)
    return float(counts.max()) / float(flat.size)


def _number(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


def _image(path: Path, pixels: np.ndarray, warned: list[str], **meta) -> XRayImage:
    """The loaded image; ``pixels`` must have passed :func:`_check_pixels`."""
    for message in warned:
        log.warning("%s: %s", path.name, message)
    height, width = pixels.shape[:2]
    info = ImageMeta(path=str(path), width=int(width), height=int(height), **meta)
    extra = {"warnings": list(warned)} if warned else {}
    return XRayImage(pixels=pixels, meta=info, extra=extra)


# --------------------------------------------------------------------------- PNG


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels as stored


def _load_png(path: Path, data: bytes) -> XRayImage:
    if len(data) < 33:
        raise _RefusedError("the file is truncated (the PNG data ends inside its header)")
    length, chunk = struct.unpack_from(">I4s", data, 8)
    if chunk != b"IHDR" or length != 13:
        raise _RefusedError("the PNG data is corrupt (its header chunk is missing)")
    width, height, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    if color_type not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise _RefusedError(f"the PNG data is corrupt (bit depth {depth}, colour type {color_type})")
    _check_size(width, height)
    _check_png_chunks(data)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise _RefusedError("the PNG data is corrupt and cannot be decoded")
    gray = np.ascontiguousarray(_to_gray(pixels, "BGR"))
    _check_pixels(gray)
    return _image(
        path,
        gray,
        [],
        format="PNG",
        bits_stored=16 if gray.dtype == np.uint16 else 8,
        original_channels=_PNG_CHANNELS[color_type],
    )


def _check_png_chunks(data: bytes) -> None:
    """Walk the chunk list to IEND: a cut-off file is reported as truncated, not as corrupt."""
    pos, size = 8, len(data)
    while pos + 8 <= size:
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > size:
            break
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos = end
    raise _RefusedError("the file is truncated (the PNG data ends early); it may have been copied incompletely")


# --------------------------------------------------------------------------- JPEG

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_frame_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, components, precision) from the JPEG's SOF segment, without decoding."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            raise _RefusedError("the JPEG data is corrupt (a marker is missing before the image header)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _RefusedError("the JPEG data is corrupt (no image header before the image data)")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise _RefusedError("the JPEG data is corrupt (a header segment has an invalid length)")
        if marker in _SOF_MARKERS:
            if pos + 10 > size:
                break
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            return width, height, components, precision
        pos += 2 + length
    raise _RefusedError("the file is truncated (the JPEG data ends before its image header)")


def _quiet_pillow_size_warning() -> None:
    """Pillow warns above 89 megapixels; our own limit (checked first) is the one that counts.

    A filter added once, not ``warnings.catch_warnings`` per call: that is not thread-safe.
    """
    from PIL import Image

    file_warnings.ignore_warnings(Image.DecompressionBombWarning)


# When the entropy-coded data of a JPEG is damaged or cut short but its end marker is
# still there, libjpeg warns (to a callback Pillow does not expose) and fills the rest of
# the image with the last block's shade: complete rows of one grey value at the bottom.
GREY_FILL_MIN_ROWS = 16
GREY_FILL_MIN_SHARE = 0.125


def _check_grey_fill(stored: np.ndarray) -> None:
    """Refuse a decoded JPEG whose bottom rows are one flat shade (see above); padding is fine."""
    height = stored.shape[0]
    if height < GREY_FILL_MIN_ROWS:
        return
    shade = stored[-1, :1]  # the bottom-left pixel: (1,) for gray, (1, C) for colour
    if not (stored[-1] == shade).all() or float(shade.mean()) < 8:
        return
    flat = (stored == shade).reshape(height, -1).all(axis=1)
    n = height if flat.all() else height - int(np.flatnonzero(~flat)[-1]) - 1
    if n < max(GREY_FILL_MIN_ROWS, GREY_FILL_MIN_SHARE * height):
        return
    # Padding (a film letterboxed onto a square) has the same shade along another edge too;
    # the decoder's fill starts somewhere inside the image and only covers its bottom.
    edges = (stored[0], stored[:, 0], stored[:, -1])
    if any((edge == shade).all() for edge in edges):
        return
    raise _RefusedError(
        f"the JPEG data is damaged: the decoder filled the bottom {n} of {height} rows with one shade of grey "
        "(part of the image data is corrupt or missing)"
    )


def _load_jpeg(path: Path, data: bytes) -> XRayImage:
    from PIL import ExifTags, Image, ImageOps

    width, height, components, precision = _jpeg_frame_header(data)
    if height == 0:  # height given later in a DNL segment: let the decoder find it
        height = 1
    _check_size(width, height)
    # Pillow takes the size from the last frame header before the scan, libjpeg refuses a
    # second one: every header in the file is checked, and more than one is refused.
    frames = jpeg_sizes(data)
    for frame in frames:
        _check_size(frame.width, max(frame.height, 1))
    if len(frames) > 1:
        raise _RefusedError("the JPEG data is corrupt (it holds more than one image header)")
    if components > 4:
        raise _RefusedError(f"the JPEG data is corrupt ({components} colour components)")
    if precision != 8:
        raise _RefusedError(f"it is a {precision}-bit JPEG, which this program cannot decode (8-bit JPEG only)")
    warned: list[str] = []
    _quiet_pillow_size_warning()
    try:
        img = Image.open(io.BytesIO(data), formats=["JPEG"])
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        if "truncated" in str(exc).lower():
            raise _RefusedError(
                "the file is truncated (the JPEG data ends early); it may have been copied incompletely"
            ) from None
        log.info("%s: %s", path.name, exc)
        raise _RefusedError("the JPEG data is corrupt and cannot be decoded") from None
    _check_grey_fill(np.asarray(img.convert("L")) if img.mode not in ("L", "RGB") else np.asarray(img))
    try:
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception as exc:  # a broken EXIF block must not cost the image
        warned.append(f"EXIF orientation could not be read ({type(exc).__name__}); shown as stored")
    mode = img.mode
    if mode == "L":
        gray = np.asarray(img)
    elif mode == "RGB":
        gray = _to_gray(np.asarray(img), "RGB")
    else:  # CMYK, YCbCr, I;16...: let Pillow bring them to RGB first
        gray = _to_gray(np.asarray(img.convert("RGB")), "RGB")
    channels = {"L": 1, "RGB": 3, "YCbCr": 3, "CMYK": 4}.get(mode, components)
    gray = np.ascontiguousarray(gray)
    _check_pixels(gray)
    return _image(
        path,
        gray,
        warned,
        format="JPEG",
        bits_stored=8,
        original_channels=channels,
    )


# --------------------------------------------------------------------------- DICOM

_PYDICOM_IMPORT = threading.Lock()


def import_pydicom() -> None:
    """Import pydicom and the parts of it the app uses, one thread at a time.

    pydicom's modules import each other in a cycle; when two threads import it for the
    first time at once (the viewer's loader reading a DICOM while the exporters load, or
    a decoding thread pool starting on a folder of DICOMs), CPython hands one of them a
    half-initialised module and the import fails ("cannot import name 'Dataset' from
    partially initialized module"). Every first import goes through here instead.
    """
    with _PYDICOM_IMPORT:
        import pydicom  # noqa: F401
        import pydicom.dataset  # noqa: F401
        import pydicom.pixels  # noqa: F401
        import pydicom.sequence  # noqa: F401
        import pydicom.uid  # noqa: F401


def _load_dicom(path: Path, data: bytes) -> XRayImage:
    import_pydicom()
    import pydicom
    from pydicom.errors import InvalidDicomError

    file_warnings.install()  # pydicom's warnings: collected per file, not printed
    _check_deflated(data)
    # Header values that break the standard's rules (a stray character in a UID, a date
    # written the American way) are common and harmless for viewing: pydicom logs each as
    # it is read, which is not news for the reader, so they are not collected. Pixel-data
    # warnings are collected per file in _decode_first_frame.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, struct.error, ValueError, KeyError, IndexError, TypeError) as exc:
        log.info("%s: %s", path.name, exc)
        raise _RefusedError("the DICOM header is damaged or truncated") from None
    return _dicom_image(path, ds)


_DEFLATED = b"1.2.840.10008.1.2.1.99"
MAX_INFLATED_BYTES = 1024**3


def _check_deflated(data: bytes) -> None:
    """A deflated data set is inflated whole by pydicom: measure what it expands to first.

    Deflate reaches ratios of 1000:1, so a small file could otherwise ask for gigabytes.
    """
    import zlib

    if _DEFLATED not in data[:65536]:
        return
    try:  # pydicom's own reader, so the deflated part starts exactly where pydicom's does
        from pydicom.filereader import _read_file_meta_info, read_preamble
    except ImportError:  # pragma: no cover - a future pydicom without the private helper
        return
    fh = io.BytesIO(data)
    try:
        read_preamble(fh, force=True)
        meta = _read_file_meta_info(fh)
    except Exception:
        return  # pydicom will refuse the header in the same way
    if str(meta.get("TransferSyntaxUID", "")).strip("\x00 ") != _DEFLATED.decode():
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pos, step = 0, fh.tell(), 1 << 20
    try:
        while pos < len(data) or inflater.unconsumed_tail:
            chunk = inflater.unconsumed_tail or data[pos : pos + step]
            if not inflater.unconsumed_tail:
                pos += step
            total += len(inflater.decompress(chunk, step))
            if total > MAX_INFLATED_BYTES:
                raise _RefusedError(
                    f"the file is too large: its compressed (deflated) data expands to more than "
                    f"{MAX_INFLATED_BYTES // 1024**3} GB; it may be damaged or crafted"
                )
            if inflater.eof:
                return
    except zlib.error:
        raise _RefusedError("the file's compressed (deflated) data is damaged") from None
    raise _RefusedError("the file is truncated: its compressed (deflated) data ends early")


def _dicom_image(path: Path, ds) -> XRayImage:
    if not any(tag in ds for tag in _PIXEL_DATA_TAGS):
        raise _RefusedError(_no_pixel_data_reason(ds))

    rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
    frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    samples = max(1, _int(ds.get("SamplesPerPixel"), 1))
    if rows is None or columns is None:
        raise _RefusedError("the DICOM header is incomplete (the image size, Rows/Columns, is missing)")
    _check_size(columns, rows, frames)

    ts = _transfer_syntax(ds)
    _check_decoder(ts)
    _check_codestream(ds, ts, columns, rows, samples, frames)

    warned: list[str] = []
    pixels = _decode_first_frame(ds, ts, warned)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() or "MONOCHROME2"
    bits_stored = _int(ds.get("BitsStored"), 0) or 8 * pixels.dtype.itemsize

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = _to_gray(apply_color_lut(pixels, ds), "RGB")
        photometric, channels = "MONOCHROME2", 3
        bits_stored = 8 * pixels.dtype.itemsize  # the palette's depth, not the indices'
    elif pixels.ndim == 3:  # RGB or YBR (pydicom has converted YBR to RGB)
        pixels = _to_gray(pixels, "RGB")
        photometric, channels = "MONOCHROME2", samples
    else:
        pixels = _modality_transform(pixels, ds)
        channels = 1
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        warned.append(f"unexpected Photometric Interpretation {photometric!r}; shown as MONOCHROME2")
        photometric = "MONOCHROME2"

    spacing, spacing_source = _pixel_spacing(ds)
    pixels = np.ascontiguousarray(pixels)
    _check_pixels(pixels)
    window, window_note = _usable_window(pixels, _default_window(ds) if channels == 1 else None, photometric)
    return _image(
        path,
        pixels,
        warned,
        format="DICOM",
        bits_stored=bits_stored,
        photometric=photometric,
        modality=_text(ds, "Modality"),
        original_channels=channels,
        default_window=window,
        window_note=window_note,
        pixel_spacing=spacing,
        spacing_source=spacing_source,
        view_position=_text(ds, "ViewPosition"),
        patient_age=_text(ds, "PatientAge"),
        patient_sex=_text(ds, "PatientSex"),
        number_of_frames=frames,
        frame_index=0,
        transfer_syntax=ts.name,
        patient=_strings(ds, _PATIENT_KEYWORDS),
        study=_strings(ds, _STUDY_KEYWORDS),
        tags=_tag_table(ds),
    )


def _no_pixel_data_reason(ds) -> str:
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = getattr(sop, "name", "") if sop else ""
    if name == str(sop):  # pydicom names unknown UIDs by the UID itself: say nothing rather than that
        name = ""
    if "Rows" in ds or "Columns" in ds or "Image Storage" in name:
        return (
            "the file is truncated or damaged: its header describes an image, but the image data is missing; "
            "it may have been copied incompletely"
        )
    if name == "Media Storage Directory Storage":
        return "it is a DICOMDIR (the index of a DICOM folder), not an image; open the image files it lists"
    if name:
        kind = "a structured report" if " SR" in name or "Report" in name else "not an image"
        return f"this DICOM file contains no image (its type is {name.removesuffix(' Storage')}: {kind})"
    return "this DICOM file contains no image data (it may be truncated, or a report rather than an image)"


def _transfer_syntax(ds):
    """The file's transfer syntax; for a data set without file meta, the one it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts).strip("\x00 "))
    implicit, little = ds.original_encoding
    if implicit is None or implicit:
        ts = ImplicitVRLittleEndian
    else:
        ts = ExplicitVRLittleEndian if little in (None, True) else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    return ts


def _check_decoder(ts) -> None:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise _RefusedError(
            f"its image compression ({ts.name}) is not supported by any decoder this program knows"
        ) from None
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(ts))
        if package is None:
            options = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
            package = f"one of: {options}"
        raise _RefusedError(f"{ts.name}: no decoder installed (install {package})")


def _check_codestream(ds, ts, columns: int, rows: int, samples: int, frames: int) -> None:
    """Compare the size inside the first frame's codestream with the header, before decoding.

    JPEG, JPEG-LS and JPEG 2000 decoders allocate by the size in the codestream, not by
    Rows/Columns: a small file whose codestream claims 60000 x 60000 would otherwise take
    gigabytes. The frame is cut out exactly as pydicom will cut it for the decoder.
    """
    from pydicom.encaps import get_frame
    from pydicom.uid import RLELossless

    if not ts.is_encapsulated or ts == RLELossless or 0x7FE00010 not in ds:
        return
    try:
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        frame = get_frame(ds.PixelData, 0, number_of_frames=frames, extended_offsets=offsets)
    except _FATAL:
        raise
    except BaseException:
        return  # pydicom cuts the frame the same way and will report the damage
    sizes = codestream_sizes(frame if isinstance(frame, bytes) else bytes(frame))
    if sizes is None or not sizes:
        raise _RefusedError(
            f"the compressed image data is damaged (no {ts.name} image header at the start of the first frame)"
        )
    first = sizes[0]
    for found in sizes:
        _check_codestream_size(found, columns, rows)
        if found.components > max(4, samples):
            raise _RefusedError(f"the compressed image data is damaged ({found.components} colour components)")
    if (first.width, first.height) != (columns, rows):
        raise _RefusedError(
            f"the compressed image ({first.width} x {first.height} pixels) does not match the size in its header "
            f"({columns} x {rows}); the file is damaged"
        )
    # Hierarchical frames, a JP2 file's codestream, and every other fragment that starts a
    # codestream (should pydicom ever cut the frames differently): never larger than the image.
    for later in [*sizes[1:], *_other_fragment_sizes(ds.PixelData)]:
        _check_codestream_size(later, columns, rows)
        if later.width > columns or later.height > rows or later.components > max(4, samples):
            raise _RefusedError(
                f"the compressed image ({later.width} x {later.height} pixels) does not match the size in its "
                f"header ({columns} x {rows}); the file is damaged"
            )


def _other_fragment_sizes(encapsulated: bytes) -> list[FrameSize]:
    from pydicom.encaps import generate_fragments

    out: list[FrameSize] = []
    try:
        for fragment in generate_fragments(encapsulated):
            out.extend(codestream_sizes(bytes(fragment)) or [])
    except Exception:  # a broken item list: the first frame, checked above, is what pydicom decodes
        pass
    return out


def _check_codestream_size(found: FrameSize, columns: int, rows: int) -> None:
    width, height = found.width, found.height
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise _RefusedError(
            f"the image is too large ({width} x {height} pixels inside its compressed data, though its header "
            f"says {columns} x {rows}; the limit is {MAX_SIDE} pixels per side and "
            f"{MAX_PIXELS // 1_000_000} megapixels); the file is damaged or crafted"
        )


def _usable_window(pixels: np.ndarray, window: Window | None, photometric: str) -> tuple[Window | None, str]:
    """The file's window, or None and the reason it would show nothing (issue 13, section 3)."""
    if window is None:
        return None, ""
    problem = window_problem(pixels, window, inverted=photometric == "MONOCHROME1")
    if problem is None:
        return window, ""
    stored = "VOI LUT" if window.source == "voi_lut" else "window"
    note = (
        f"The file's {stored} (centre {_number(window.center)}, width {_number(window.width)}) {problem}; "
        "the automatic window (0.5-99.5 percentile) is used instead, on screen and for the AI."
    )
    return None, note


def _decode_first_frame(ds, ts, warned: list[str]) -> np.ndarray:
    from pydicom.pixels import pixel_array

    with file_warnings.collect() as caught:
        try:
            # index=0 decodes only the first frame; it also ignores surplus frames that
            # extra bytes at the end of the pixel data would otherwise suggest.
            pixels = pixel_array(ds, index=0)
        except (MemoryError, *_FATAL):
            raise
        except BaseException as exc:  # includes decoder panics (see load_image)
            raise _RefusedError(_decode_failure(exc, ts)) from None
    for message in caught:
        warned.append(_short(message, 300))
    if not pixels.dtype.isnative:  # big-endian files: OpenCV and most NumPy users expect native order
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


_MISSING_ELEMENT = re.compile(r"Missing required element: \((\w{4}),(\w{4})\) '([^']+)'")


def _decode_failure(exc: BaseException, ts) -> str:
    """Why pydicom could not decode the pixels, in words; the decoder's own text goes to the log."""
    text = str(exc)
    log.info("pixel data (%s): %s: %s", ts.name, type(exc).__name__, _short(text, 500))
    if "less than expected" in text or "insufficient" in text.lower() or isinstance(exc, EOFError):
        return "the file is truncated: the image data is incomplete (it may have been copied incompletely)"
    missing = _MISSING_ELEMENT.search(text)
    if missing:
        group, element, name = missing.groups()
        return f"the DICOM header lacks {name} ({group},{element}), which is needed to read the image"
    if "NoneType" in text or "has no len" in text:
        return "the image data element is empty"
    if "Photometric Interpretation" in text:
        return "the DICOM header's Photometric Interpretation is missing or not one this program knows"
    return f"the image data could not be decoded ({ts.name}); the file may be truncated or corrupt"


def _modality_transform(pixels: np.ndarray, ds) -> np.ndarray:
    """Stored values to modality values (Modality LUT or Rescale Slope/Intercept).

    Integral slope and intercept keep integers (in the smallest type that holds the
    result), so a 16-bit detector image stays compact and exact; otherwise float32.
    """
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(pixels, ds)
    slope = _float(ds.get("RescaleSlope"), 1.0)
    intercept = _float(ds.get("RescaleIntercept"), 0.0)
    if slope == 0.0:  # a zero slope would erase the image: treat as absent, as viewers do
        slope = 1.0
    if slope == 1.0 and intercept == 0.0:
        return pixels
    if pixels.size:  # values beyond float32 would become infinite: say which header values are wrong
        ends = [float(pixels.min()) * slope + intercept, float(pixels.max()) * slope + intercept]
        if not all(np.isfinite(ends)) or max(abs(v) for v in ends) > 1e30:
            raise _RefusedError(
                f"its Rescale Slope ({_number(slope)}) and Intercept ({_number(intercept)}) are out of range "
                "(they would turn the pixel values into numbers no display can show); the header is damaged"
            )
    if slope.is_integer() and intercept.is_integer() and pixels.dtype.kind in "iu" and pixels.size:
        s, b = int(slope), int(intercept)
        products = (int(pixels.min()) * s, int(pixels.max()) * s)
        lo, hi = min(products) + b, max(products) + b
        bounds = (*products, lo, hi, s, b)
        if min(bounds) < -(2**63) or max(bounds) >= 2**63:  # beyond int64: the float path below
            return _float_rescale(pixels, slope, intercept)
        work = np.int32 if min(bounds) >= -(2**31) and max(bounds) < 2**31 else np.int64
        out = pixels.astype(work)
        out *= s
        out += b
        for dtype in (np.uint8, np.uint16, np.int16, np.int32):
            if dtype == np.uint8 and pixels.dtype != np.uint8:
                continue
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return out.astype(dtype)
        return out
    return _float_rescale(pixels, slope, intercept)


def _float_rescale(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    out = pixels.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(intercept)
    return out


def _default_window(ds) -> Window | None:
    """The first Window Center/Width pair, else a linear window over the VOI LUT's input range.

    Both apply to modality values, which is what the loader returns.
    """
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1.0:
        # VOI LUT Function applies to the window; SIGMOID is drawn as such by apply_window.
        function = "SIGMOID" if _text(ds, "VOILUTFunction").upper() == "SIGMOID" else "LINEAR"
        return Window(center=center, width=width, source="dicom", function=function)
    return _voi_lut_window(ds)


def _voi_lut_window(ds) -> Window | None:
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None
    try:
        item = seq[0]
        descriptor = [int(v) for v in item.LUTDescriptor]
        entries = descriptor[0] or 65536
        first = descriptor[1]
        if _int(ds.get("PixelRepresentation"), 0) == 1 and first >= 32768:
            first -= 65536  # "US or SS" read as US in a signed image
    except Exception:
        return None
    lo, hi = float(first), float(first + entries)
    lut = _lut_values(item)
    if lut is not None and lut.size == entries:
        # A LUT that is flat at its ends (clipped) only ramps over part of its input range:
        # the window covers the ramp, which is what the LUT actually shows.
        changes = np.flatnonzero(np.diff(lut))
        if changes.size and not (changes[0] == 0 and changes[-1] == entries - 2):
            lo, hi = float(first + changes[0]), float(first + changes[-1] + 1)
    return Window(center=(lo + hi) / 2.0, width=max(hi - lo, 1.0), source="voi_lut")


def _lut_values(item) -> np.ndarray | None:
    try:
        value = item.LUTData
        if isinstance(value, bytes):
            return np.frombuffer(value[: len(value) // 2 * 2], dtype="<u2").astype(np.int64)
        if isinstance(value, int):
            return np.array([value], dtype=np.int64)
        return np.asarray(list(value), dtype=np.int64)
    except Exception:
        return None


def _pixel_spacing(ds) -> tuple[tuple[float, float] | None, str]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is None:
                continue
            row, col = (float(v) for v in list(value)[:2])
        except Exception:
            continue
        if row > 0 and col > 0:
            return (row, col), keyword
    return None, ""


def _tag_table(ds) -> tuple[tuple[str, str, str, str], ...]:
    """(tag, keyword, VR, value text) for every top-level element, file meta first."""
    rows: list[tuple[str, str, str, str]] = []
    meta = getattr(ds, "file_meta", None)
    sources = ([meta] if meta is not None else []) + [ds]
    for source in sources:
        for tag in list(source.keys()):
            if tag in _PIXEL_DATA_TAGS:
                continue
            try:
                elem = source[tag]
                rows.append(
                    (f"({tag.group:04X},{tag.element:04X})", elem.keyword or elem.name, str(elem.VR), _value_text(elem))
                )
            except Exception:
                rows.append((f"({tag.group:04X},{tag.element:04X})", "", "", "<unreadable>"))
    return tuple(rows)


def _value_text(elem) -> str:
    from pydicom.multival import MultiValue

    value = elem.value
    if elem.VR == "SQ":
        return f"<{len(value)} items>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        items = list(value)
        shown = "\\".join(str(v) for v in items[:24])
        text = shown + (f"\\… ({len(items)} values)" if len(items) > 24 else "")
        return _short(text)
    return _short(str(value))


def _text(ds, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return "" if value is None else str(value).strip()


def _strings(ds, keywords: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for keyword in keywords:
        text = _text(ds, keyword)
        if text:
            out[keyword] = text
    return out


def _int(value, default: int | None = None) -> int | None:
    try:
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value, default: float) -> float:
    try:
        if value is None or value == "":
            return default
        result = float(value)
    except (TypeError, ValueError):
        return default
    return result if np.isfinite(result) else default


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
            value = list(value)[0]
        result = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return result if np.isfinite(result) else None
