"""Fuzz the loader: the only promise checked is "an image, or ImageLoadError in plain words".

Seeds are the shipped samples, pydicom's own small test files (JPEG, JPEG-LS, JPEG 2000, RLE),
synthetic files of every supported kind and the crafted bad inputs of ``tests/bad_inputs.py``
(the codestream size bombs included). Each case is one seed with one to three mutations:

* DICOM, structure-aware: a header value set to an awkward one (sizes, bit depths, rescale,
  windows, photometric interpretation, VOI LUT function...), an element deleted or given
  another VR, another transfer syntax, the encapsulated pixel data's fragments dropped,
  duplicated, split, truncated or with the codestream's own size rewritten, an element's
  length field rewritten;
* any file, bytes: random byte flips, a truncation, an inserted or zeroed run of bytes, and
  for JPEG / JPEG 2000 data the frame header's size rewritten.

Every case is loaded in this process under an address-space cap (``RLIMIT_AS``), with a
watchdog that ends the run if one case hangs. Counted: cases, outcomes (loaded, refused by
reason, escapes: any other exception, or a message that shows Python internals), the slowest
case and the peak RSS.

    .venv/bin/python benchmarks/fuzz_loading.py --cases 10000 --seed 1 --json out.json

``run(cases, seed)`` is what ``tests/test_fuzz_loading.py`` calls with a small count.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import re
import resource
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout

from inference.image import ImageLoadError  # noqa: E402
from inference.loading import load_image  # noqa: E402

# Words that must never reach the person at the screen.
INTERNALS = re.compile(r"Error:|Exception|NoneType|has no len|Traceback|object is not|Python int|unsupported operand")

PYDICOM_FILES = (
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "CT_small.dcm",
)

_US_VALUES = (0, 1, 2, 3, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 64, 255, 256, 4096, 20001, 65535)
_NUMBER_TEXT = ("0", "-1", "1e308", "-1e308", "nan", "inf", "", "1\\2", "3.4e38", "1e-308", "65536", "2147483648")
_FIELDS: dict[str, tuple] = {
    "Rows": _US_VALUES,
    "Columns": _US_VALUES,
    "BitsAllocated": _US_VALUES,
    "BitsStored": _US_VALUES,
    "HighBit": _US_VALUES,
    "PixelRepresentation": (0, 1, 2, 255),
    "SamplesPerPixel": (0, 1, 2, 3, 4, 255),
    "PlanarConfiguration": (0, 1, 2),
    "NumberOfFrames": ("0", "1", "2", "-1", "1e30", "", "65536"),
    "PhotometricInterpretation": (
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "",
        "ARGB",
        "HSV",
    ),
    "RescaleSlope": _NUMBER_TEXT,
    "RescaleIntercept": _NUMBER_TEXT,
    "WindowCenter": _NUMBER_TEXT,
    "WindowWidth": _NUMBER_TEXT,
    "VOILUTFunction": ("SIGMOID", "LINEAR_EXACT", "LINEAR", "BOGUS", ""),
    "PixelSpacing": ("0\\0", "-1\\1", "nan\\nan", "1e308\\1", ""),
    "ImagerPixelSpacing": ("0\\0", "-1\\1", "nan\\nan", ""),
}
_VRS = ("UN", "OB", "OW", "SS", "US", "FD", "FL", "LO", "CS", "DS", "IS", "UL", "SQ")
_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.5",
    "1.2.3.4",
)
_SIZES = (0, 1, 63, 64, 65, 4096, 20001, 30000, 60000, 65535)


# --------------------------------------------------------------------------- seeds


def seeds() -> dict[str, bytes]:
    """Every seed file by name (real samples, pydicom's test files, synthetic and crafted files)."""
    import pydicom.data
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

    from tests.bad_inputs import (
        encapsulated_dicom,
        j2k_codestream,
        make_bad_inputs,
        valid_jpeg_bytes,
        valid_png_bytes,
    )
    from tests.dicom_factory import make_dicom

    out: dict[str, bytes] = {}
    for path in sorted((ROOT / "resources" / "samples").iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"):
            out[f"sample:{path.name}"] = path.read_bytes()
    for name in PYDICOM_FILES:
        found = pydicom.data.get_testdata_file(name, download=False)
        if found:
            out[f"pydicom:{name}"] = Path(found).read_bytes()
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        variants = {
            "dicom12": {"bits_stored": 12, "window": (2048, 4096)},
            "dicom_mono1_rescale": {"bits_stored": 12, "photometric": "MONOCHROME1", "slope": 2, "intercept": -100},
            "dicom_voi_lut": {"bits_stored": 12, "voi_lut": (0, np.arange(4096) // 16)},
            "dicom_rle": {"bits_stored": 12, "transfer_syntax": RLELossless},
            "dicom_bare": {"bits_stored": 12, "preamble": False},
        }
        for name, kwargs in variants.items():
            make_dicom(directory / f"{name}.dcm", ramp, **kwargs)
            out[f"synthetic:{name}"] = (directory / f"{name}.dcm").read_bytes()
        for name, path in sorted(make_bad_inputs(directory / "bad").items()):
            out[f"crafted:{name}"] = path.read_bytes()
    out["synthetic:png8"] = valid_png_bytes(32)
    out["synthetic:jpeg"] = valid_jpeg_bytes(32)
    out["synthetic:dicom_jpeg"] = encapsulated_dicom(valid_jpeg_bytes(32), JPEGBaseline8Bit, 32, 32)
    out["synthetic:dicom_j2k"] = encapsulated_dicom(j2k_codestream(32), JPEG2000Lossless, 32, 32)
    png16 = _png16()
    if png16:
        out["synthetic:png16"] = png16
    return out


def _png16() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16))
    return buf.tobytes() if ok else b""


# --------------------------------------------------------------------------- mutations


def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 17))):
        out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
    return bytes(out)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data) + 1))]


def _insert(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]


def _zero_run(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 2048))
    fill = bytes([int(rng.choice([0, 0xFF]))]) * n
    return (data[:at] + fill + data[at + n :])[: len(data)]


def _codestream_size(data: bytes, rng: np.random.Generator) -> bytes:
    """Rewrite the size in a JPEG frame header or a JPEG 2000 SIZ wherever one appears."""
    out = bytearray(data)
    marks = [m.start() for m in re.finditer(rb"\xff[\xc0\xc1\xc2\xc3\xf7\xde]", data)]
    marks += [m.start() for m in re.finditer(rb"\xff\x4f\xff\x51", data)]
    if not marks:
        return _flip(data, rng)
    at = int(rng.choice(marks))
    width, height = (int(rng.choice(_SIZES)) for _ in range(2))
    if out[at + 1] == 0x4F and at + 30 <= len(out):
        struct.pack_into(">II", out, at + 8, width, height)
        if rng.random() < 0.5:
            struct.pack_into(">II", out, at + 24, width, height)  # one tile
    elif at + 9 <= len(out):
        struct.pack_into(">HH", out, at + 5, height, width)
    return bytes(out)


def _length_field(data: bytes, rng: np.random.Generator) -> bytes:
    """Rewrite the length of a group 0028 or 7FE0 element (explicit or implicit VR, little endian)."""
    marks = [m.start() for m in re.finditer(rb"\x28\x00..|\xe0\x7f\x10\x00", data, re.S)]
    if not marks:
        return _flip(data, rng)
    at = int(rng.choice(marks)) + 4
    out = bytearray(data)
    value = int(rng.choice([0, 1, 2, 3, 0xFFFF, 0xFFFFFFFF, len(data), len(data) * 2, int(rng.integers(0, 1 << 16))]))
    if out[at : at + 2].isalpha() and at + 4 <= len(out):  # explicit VR: 2-byte length after the VR
        struct.pack_into("<H", out, at + 2, value & 0xFFFF)
    elif at + 4 <= len(out):
        struct.pack_into("<I", out, at, value & 0xFFFFFFFF)
    return bytes(out)


def _dicom_dataset(data: bytes):
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=True)


def _write(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _set_value(ds, rng: np.random.Generator) -> None:
    keyword = str(rng.choice(sorted(_FIELDS)))
    value = _FIELDS[keyword][int(rng.integers(0, len(_FIELDS[keyword])))]
    setattr(ds, keyword, value)


def _delete(ds, rng: np.random.Generator) -> None:
    keys = list(ds.keys())  # tags (iterating a Dataset gives its elements)
    tags = [t for t in keys if t.group in (0x0028, 0x7FE0, 0x0002)] or keys
    if tags:
        del ds[tags[int(rng.integers(0, len(tags)))]]


def _change_vr(ds, rng: np.random.Generator) -> None:
    tags = [t for t in list(ds.keys()) if t.group in (0x0028, 0x7FE0)]
    if tags:
        ds[tags[int(rng.integers(0, len(tags)))]].VR = str(rng.choice(_VRS))


def _transfer_syntax(ds, rng: np.random.Generator) -> None:
    from pydicom.dataset import FileMetaDataset

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = str(rng.choice(_SYNTAXES))


def _fragments(ds, rng: np.random.Generator) -> None:
    """Drop, duplicate, split, truncate or rewrite the fragments of encapsulated pixel data."""
    from pydicom.encaps import generate_fragments

    if "PixelData" not in ds or not getattr(ds["PixelData"], "is_undefined_length", False):
        raise ValueError("not encapsulated")
    fragments = list(generate_fragments(ds.PixelData))
    if not fragments:
        raise ValueError("no fragments")
    i = int(rng.integers(0, len(fragments)))
    op = int(rng.integers(0, 6))
    if op == 0 and len(fragments) > 1:
        del fragments[i]
    elif op == 1:
        fragments.insert(i, fragments[i])
    elif op == 2 and len(fragments[i]) > 2:
        cut = int(rng.integers(1, len(fragments[i])))
        fragments[i : i + 1] = [fragments[i][:cut], fragments[i][cut:]]
    elif op == 3:
        fragments[i] = fragments[i][: int(rng.integers(0, len(fragments[i]) + 1))]
    elif op == 4:
        fragments[i] = _codestream_size(fragments[i], rng)
    else:
        fragments[i] = _flip(fragments[i], rng)
    offsets = b"" if rng.random() < 0.7 else struct.pack("<2I", 0, int(rng.integers(0, 1 << 31)))
    items = [b"\xfe\xff\x00\xe0" + struct.pack("<I", len(offsets)) + offsets]
    for fragment in fragments:
        fragment = fragment + b"\x00" * (len(fragment) % 2)
        items.append(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(fragment)) + fragment)
    ds.PixelData = b"".join(items)


_DICOM_OPS: tuple[Callable, ...] = (_set_value, _set_value, _delete, _change_vr, _transfer_syntax, _fragments)
_BYTE_OPS: tuple[Callable, ...] = (_flip, _flip, _truncate, _insert, _zero_run, _codestream_size)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One case from one seed: (bytes, the mutations applied, for the record)."""
    is_dicom = data[128:132] == b"DICM" or data[:2] in (b"\x08\x00", b"\x02\x00")
    applied = []
    for _ in range(int(rng.integers(1, 4))):
        if not data:
            data = b"\x00"
        if is_dicom and rng.random() < 0.6:
            op = _DICOM_OPS[int(rng.integers(0, len(_DICOM_OPS)))]
            if rng.random() < 0.15:
                data, name = _length_field(data, rng), "length"
            else:
                try:
                    ds = _dicom_dataset(data)
                    op(ds, rng)
                    data, name = _write(ds), op.__name__.strip("_")
                except Exception:
                    data, name = _flip(data, rng), "flip"
        else:
            op = _BYTE_OPS[int(rng.integers(0, len(_BYTE_OPS)))]
            data, name = op(data, rng), op.__name__.strip("_")
        applied.append(name)
        if not data:
            data = b"\x00"
    return data, "+".join(applied)


# --------------------------------------------------------------------------- running


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _outcome(path: Path, causes: Counter[str]) -> tuple[str, str]:
    """("loaded", "") or ("refused", reason) or ("escape", what); ``causes`` counts the
    exception types behind refusals that no check of the loader anticipated."""
    try:
        image = load_image(path)
    except ImageLoadError as exc:
        text = str(exc)
        if exc.__cause__ is not None:
            causes[type(exc.__cause__).__name__] += 1
        if INTERNALS.search(text):
            return "escape", f"raw message: {text[:160]}"
        if "not enough memory" in text:
            return "escape", f"memory: {text[:160]}"  # a size check let a bomb through to the cap
        reason = text.split(": ", 1)[-1]
        reason = re.sub(r"[\d,.]+", "N", reason)
        return "refused", reason.split(";")[0].split(" (")[0][:70]
    except BaseException as exc:  # anything but our error is the finding
        return "escape", f"{type(exc).__name__}: {str(exc)[:160]}"
    pixels = image.pixels
    if pixels.ndim != 2 or pixels.size == 0 or (pixels.dtype.kind == "f" and not np.isfinite(pixels).all()):
        return "escape", f"bad image {pixels.shape} {pixels.dtype}"
    return "loaded", ""


def run(cases: int, seed: int, memory_cap_gb: float | None = 3.0, hang_s: float = 120.0) -> dict:
    """Fuzz ``cases`` cases from ``seed``; returns the figures (see the module docstring)."""
    import pydicom.config

    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    corpus = seeds()
    names = sorted(corpus)
    if memory_cap_gb:
        cap = int(memory_cap_gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    rng = np.random.default_rng(seed)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    escapes: list[dict] = []
    slowest = (0.0, "")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case"
        for i in range(cases):
            if i < len(names) and cases >= len(names):  # every seed once as it is, then mutations
                name, data, applied = names[i], corpus[names[i]], "none"
            else:
                name = names[int(rng.integers(0, len(names)))]
                data, applied = mutate(corpus[name], rng)
            path.write_bytes(data)
            faulthandler.dump_traceback_later(hang_s, exit=True)
            t0 = time.perf_counter()
            kind, what = _outcome(path, causes)
            elapsed = time.perf_counter() - t0
            faulthandler.cancel_dump_traceback_later()
            counts[kind] += 1
            if kind == "refused":
                reasons[what] += 1
            elif kind == "escape":
                escapes.append({"case": i, "seed": name, "mutations": applied, "what": what})
            if elapsed > slowest[0]:
                slowest = (elapsed, f"{name} ({applied})")
    return {
        "cases": cases,
        "seed": seed,
        "seed_files": len(names),
        "loaded": counts["loaded"],
        "refused": counts["refused"],
        "escapes": len(escapes),
        "escape_examples": escapes[:20],
        "refusal_reasons": dict(reasons.most_common(25)),
        "unanticipated_exception_types": dict(causes.most_common()),
        "max_case_seconds": round(slowest[0], 3),
        "slowest_case": slowest[1],
        "max_rss_mb": round(_rss_mb(), 1),
        "memory_cap_gb": memory_cap_gb,
        "total_seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-cap-gb", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures = run(args.cases, args.seed, args.memory_cap_gb)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 1 if figures["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())
