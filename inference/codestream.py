"""The image size written inside compressed codestreams, read without decoding.

A DICOM file says how large its image is twice: in the header (Rows/Columns) and inside
each compressed frame (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ). The decoders allocate by
the second, so a 2 KB file whose header says 64 x 64 but whose codestream says
60000 x 60000 made them reach for 12 GB. The loader reads every size written here and
compares it with the header and its limits before any decoder runs.

The parsers are lenient on purpose: they report every frame header they can find and
never raise on damaged data (the decoder will refuse that), so that a size cannot hide
behind a malformed segment the decoder would skip.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "FrameSize",
    "JP2_SIGNATURE",
    "J2K_SIGNATURE",
    "codestream_sizes",
    "j2k_sizes",
    "jpeg_sizes",
]

J2K_SIGNATURE = b"\xff\x4f\xff\x51"  # SOC followed by SIZ
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JPEG 2000 signature box

# Frame headers: SOF0-SOF15 (not DHT C4, JPG C8, DAC CC), DHP (hierarchical: the whole
# image's size) and JPEG-LS SOF55; LSE (F8) may carry a JPEG-LS oversize dimension.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_FRAME_MARKERS = _SOF | {0xDE, 0xF7}
_LSE = 0xF8
_EOI = 0xD9
_SOI = 0xD8
_SOS = 0xDA
# A marker: 0xFF then a code. Codes below 0xC0, the restart markers (D0-D7) and 0x00
# (byte stuffing) occur inside entropy-coded data of JPEG and JPEG-LS and are skipped.
_MARKER = re.compile(rb"\xff[\xc0-\xcf\xd8-\xfe]")


@dataclass(frozen=True)
class FrameSize:
    """One size written in a codestream: ``kind`` says where ("SOF0", "DHP", "SOF55", "SIZ"...)."""

    width: int
    height: int
    components: int
    precision: int
    kind: str


def codestream_sizes(data: bytes) -> list[FrameSize] | None:
    """Every size written in a JPEG, JPEG-LS, JPEG 2000 (J2K or JP2) codestream, in order.

    ``None`` when ``data`` does not start like any of them.
    """
    if data[:2] == b"\xff\xd8":
        return jpeg_sizes(data)
    if data[:4] == J2K_SIGNATURE or data[:12] == JP2_SIGNATURE:
        return j2k_sizes(data)
    return None


def _marker_name(code: int) -> str:
    if code == 0xDE:
        return "DHP"
    if code == 0xF7:
        return "SOF55"
    if code == _LSE:
        return "LSE"
    return f"SOF{code - 0xC0}"


def jpeg_sizes(data: bytes, start: int = 2) -> list[FrameSize]:
    """Frame sizes of a JPEG-family codestream (JPEG, lossless, hierarchical, JPEG-LS), up to EOI.

    Segments are skipped by their length (an EXIF thumbnail inside APP1 is not our image);
    entropy-coded data is searched for the next marker. A height of 0 means "given later
    in a DNL segment".
    """
    out: list[FrameSize] = []
    pos, size = start, len(data)
    scanned = False
    while True:
        match = _MARKER.search(data, pos)
        if match is None:
            return out
        at = match.start()
        code = data[at + 1]
        if code == _EOI and scanned:
            return out
        if code in (_SOI, _EOI):  # an EOI before any scan ends nothing: Pillow reads on
            pos = at + 2
            continue
        scanned = scanned or code == _SOS
        if at + 4 > size:
            return out
        (length,) = struct.unpack_from(">H", data, at + 2)
        if code in _FRAME_MARKERS and at + 10 <= size:
            precision, height, width, components = struct.unpack_from(">BHHB", data, at + 4)
            out.append(FrameSize(width, height, components, precision, _marker_name(code)))
        elif code == _LSE and at + 6 <= size and data[at + 4] == 4:
            # JPEG-LS oversize image dimension: Wxy bytes each for Y then X.
            wxy = data[at + 5]
            if 2 <= wxy <= 4 and at + 6 + 2 * wxy <= size:
                height = int.from_bytes(data[at + 6 : at + 6 + wxy], "big")
                width = int.from_bytes(data[at + 6 + wxy : at + 6 + 2 * wxy], "big")
                out.append(FrameSize(width, height, 0, 0, "LSE"))
        pos = at + 2 + max(length, 2)


def _siz(data: bytes, at: int) -> FrameSize | None:
    """The SIZ segment at ``at`` (its marker): the image area is (Xsiz - XOsiz) x (Ysiz - YOsiz)."""
    if at + 42 > len(data) or data[at : at + 2] != b"\xff\x51":
        return None
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", data, at + 6)
    (components,) = struct.unpack_from(">H", data, at + 38)
    precision = (data[at + 40] & 0x7F) + 1 if at + 41 <= len(data) else 0
    return FrameSize(xsiz - xo, ysiz - yo, components, precision, "SIZ")


def j2k_sizes(data: bytes) -> list[FrameSize]:
    """Sizes of a JPEG 2000 codestream (SIZ) or JP2 file (every ``ihdr`` and every codestream's SIZ)."""
    if data[:4] == J2K_SIGNATURE:
        found = _siz(data, 2)
        return [found] if found is not None else []
    out: list[FrameSize] = []
    _jp2_boxes(data, 0, len(data), out, depth=0)
    return out


def _jp2_boxes(data: bytes, pos: int, end: int, out: list[FrameSize], depth: int) -> None:
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:  # 64-bit length follows
            if pos + 16 > end:
                return
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:  # to the end of the file
            length = end - pos
        if length < header:
            return
        body, stop = pos + header, min(pos + length, end)
        if kind == b"jp2h" and depth < 4:
            _jp2_boxes(data, body, stop, out, depth + 1)
        elif kind == b"ihdr" and body + 11 <= stop:
            height, width, components = struct.unpack_from(">IIH", data, body)
            out.append(FrameSize(width, height, components, (data[body + 10] & 0x7F) + 1, "ihdr"))
        elif kind == b"jp2c":
            found = _siz(data, body + 2) if data[body : body + 2] == b"\xff\x4f" else None
            if found is not None:
                out.append(found)
        pos += length
