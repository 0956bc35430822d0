"""The loader: every supported variant loads faithfully, everything else fails with ImageLoadError."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from inference.display import window_image
from inference.image import ImageLoadError
from inference.loading import (
    MAX_SIDE,
    SUPPORTED_SUFFIXES,
    is_supported_file,
    load_image,
    sniff_format,
)
from tests.bad_inputs import EXPECTED_WORDS, make_bad_inputs, valid_jpeg_bytes, valid_png_bytes
from tests.dicom_factory import make_dicom, save_dicom

SHARED_DICOM = Path(__file__).parents[2] / "shared" / "data" / "dicom"


def pydicom_file(name: str) -> Path:
    """A file from pydicom's own test files or the pydicom-data package; never downloads."""
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def ramp(shape: tuple[int, int], top: int, dtype=np.uint16) -> np.ndarray:
    """Distinct values 0..top across the image, so any reordering or scaling shows."""
    n = shape[0] * shape[1]
    return (np.arange(n, dtype=np.int64) * top // max(n - 1, 1)).reshape(shape).astype(dtype)


# --------------------------------------------------------------------------- PNG


def write_png(path: Path, array: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_shipped_samples_load_in_every_format():
    from inference.paths import sample_files

    samples = sample_files()
    by_format = {}
    for path in samples:
        image = load_image(path)
        assert image.pixels.ndim == 2 and min(image.shape) >= 256
        assert image.meta.patient == {} or not any(image.meta.patient.values())  # no identity ships
        by_format.setdefault(image.meta.format, []).append(image)
    assert set(by_format) == {"PNG", "JPEG", "DICOM"}
    (dicom,) = by_format["DICOM"]
    assert dicom.meta.transfer_syntax == JPEG2000Lossless.name  # decoded through the openjpeg plugin
    assert dicom.meta.photometric == "MONOCHROME2" and window_image(dicom).std() > 20


def test_png_8bit_gray_is_exact(tmp_path):
    pixels = ramp((24, 40), 255, np.uint8)
    image = load_image(write_png(tmp_path / "g8.png", pixels))
    assert image.pixels.dtype == np.uint8
    np.testing.assert_array_equal(image.pixels, pixels)
    assert (image.meta.format, image.meta.bits_stored, image.meta.original_channels) == ("PNG", 8, 1)
    assert (image.meta.width, image.meta.height) == (40, 24)
    assert image.meta.default_window is None


def test_png_16bit_gray_keeps_full_depth(tmp_path):
    pixels = ramp((32, 32), 65535)
    image = load_image(write_png(tmp_path / "g16.png", pixels))
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.meta.bits_stored == 16


# Pure colours with distinct luminance catch a swapped channel order (BGR vs RGB).
COLOURS_RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
LUMA = {"red": 76, "green": 150, "blue": 29}  # BT.601: 0.299, 0.587, 0.114


def colour_bars_rgb(width: int = 8) -> np.ndarray:
    return np.concatenate([np.full((8, width, 3), rgb, np.uint8) for rgb in COLOURS_RGB.values()], axis=1)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_png_colour_becomes_luminance(tmp_path, mode):
    rgb = colour_bars_rgb()
    img = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)  # half transparent: alpha is ignored, the stored colour counts
    elif mode == "P":
        img = img.quantize(colors=3)
    img.save(tmp_path / "c.png")
    image = load_image(tmp_path / "c.png")
    assert image.pixels.shape == (8, 24)
    assert image.pixels.dtype == np.uint8
    got = [int(image.pixels[4, 4 + 8 * i]) for i in range(3)]
    assert got == pytest.approx(list(LUMA.values()), abs=1)
    assert image.meta.original_channels == {"RGB": 3, "RGBA": 4, "P": 3}[mode]


def test_png_gray_alpha_and_16bit_colour(tmp_path):
    la = Image.fromarray(np.stack([ramp((8, 8), 255, np.uint8), np.full((8, 8), 9, np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(image.pixels, ramp((8, 8), 255, np.uint8))
    assert image.meta.original_channels == 2

    bgr16 = np.zeros((8, 8, 3), np.uint16)
    bgr16[..., 2] = 60000  # red in OpenCV's BGR order
    bgr16[-1, -1] = 0  # one black pixel: a one-value image is refused as blank
    image = load_image(write_png(tmp_path / "rgb16.png", bgr16))
    assert image.pixels.dtype == np.uint16
    assert int(image.pixels[0, 0]) == pytest.approx(0.299 * 60000, abs=2)
    assert image.meta.bits_stored == 16 and image.meta.original_channels == 3


# --------------------------------------------------------------------------- JPEG


def blocks(height: int = 32, width: int = 48) -> np.ndarray:
    """Large flat blocks survive JPEG almost unchanged; the bright corner marks orientation."""
    img = np.full((height, width), 40, np.uint8)
    img[: height // 2, : width // 3] = 230
    img[height // 2 :, width // 3 : 2 * width // 3] = 130
    return img


def test_jpeg_gray(tmp_path):
    Image.fromarray(blocks()).save(tmp_path / "g.jpg", quality=95)
    image = load_image(tmp_path / "g.jpg")
    assert image.meta.format == "JPEG" and image.pixels.dtype == np.uint8
    assert image.meta.original_channels == 1
    assert np.abs(image.pixels.astype(int) - blocks()).mean() < 2


def test_jpeg_rgb_becomes_luminance(tmp_path):
    Image.fromarray(colour_bars_rgb(16), "RGB").save(tmp_path / "c.jpg", quality=95)
    image = load_image(tmp_path / "c.jpg")
    got = [int(image.pixels[4, 8 + 16 * i]) for i in range(3)]
    assert got == pytest.approx(list(LUMA.values()), abs=6)
    assert image.meta.original_channels == 3


def test_jpeg_cmyk(tmp_path):
    rgb = colour_bars_rgb(16)
    Image.fromarray(rgb, "RGB").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image = load_image(tmp_path / "cmyk.jpg")
    got = [int(image.pixels[4, 8 + 16 * i]) for i in range(3)]
    assert got == pytest.approx(list(LUMA.values()), abs=8)
    assert image.meta.original_channels == 4


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # "rotate 90 clockwise to display"
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, expected):
    stored = blocks()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", quality=95, exif=exif.tobytes())
    image = load_image(tmp_path / "o.jpg")
    want = expected(stored)
    assert image.pixels.shape == want.shape
    assert np.abs(image.pixels.astype(int) - want).mean() < 2


def test_jpeg_broken_exif_still_loads(tmp_path):
    data = bytearray(valid_jpeg_bytes())
    # An APP1 "Exif" segment whose TIFF header is garbage.
    app1 = b"Exif\x00\x00" + b"XX\x00\x2a" + b"\xff" * 16
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    (tmp_path / "e.jpg").write_bytes(bytes(data[:2]) + segment + bytes(data[2:]))
    image = load_image(tmp_path / "e.jpg")
    assert image.shape == (64, 64)


# --------------------------------------------------------------------------- sniffing


def test_format_comes_from_content_not_name(tmp_path):
    png = tmp_path / "really_a_png.dcm"
    png.write_bytes(valid_png_bytes())
    assert load_image(png).meta.format == "PNG"

    jpeg = tmp_path / "IM0001"  # PACS exports often have no extension
    jpeg.write_bytes(valid_jpeg_bytes())
    assert load_image(jpeg).meta.format == "JPEG"

    dicom = tmp_path / "scan.png"
    make_dicom(dicom, ramp((16, 16), 4095), bits_stored=12)
    assert load_image(dicom).meta.format == "DICOM"


def test_sniff_format_signatures():
    assert sniff_format(valid_png_bytes()[:16]) == "PNG"
    assert sniff_format(b"\xff\xd8\xff\xe0" + b"\x00" * 200) == "JPEG"
    assert sniff_format(b"\x00" * 128 + b"DICM" + b"\x02\x00") == "DICOM"
    assert sniff_format(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100") == "DICOM"  # bare, explicit VR
    assert sniff_format(b"\x08\x00\x16\x00\x1a\x00\x00\x001.2.840") == "DICOM"  # bare, implicit VR
    assert sniff_format(b"Hello, this is text") is None
    assert sniff_format(b"") is None
    assert sniff_format(b"\x08\x00\x16\x00\xff\xff\xff\x7f") is None  # implausible element length


def test_supported_suffixes_and_folder_scan(tmp_path):
    assert {".png", ".jpg", ".jpeg", ".dcm", ".dicom"} <= set(SUPPORTED_SUFFIXES)
    make_dicom(tmp_path / "IM0001", ramp((8, 8), 255))
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    assert is_supported_file(tmp_path / "IM0001")
    assert is_supported_file(tmp_path / "x.DCM")  # suffix alone suffices for dialogs (exists or not)
    assert not is_supported_file(tmp_path / "README")
    assert not is_supported_file(tmp_path / "notes.txt")
    assert not is_supported_file(tmp_path / "missing")


# --------------------------------------------------------------------------- DICOM


def dicom_file(tmp_path, pixels, name="x.dcm", **kwargs) -> Path:
    path = tmp_path / name
    make_dicom(path, pixels, **kwargs)
    return path


@pytest.mark.parametrize(
    ("bits", "dtype"),
    [(8, np.uint8), (10, np.uint16), (12, np.uint16), (14, np.uint16), (16, np.uint16)],
)
def test_dicom_bit_depths_are_exact(tmp_path, bits, dtype):
    pixels = ramp((20, 30), 2**bits - 1, dtype)
    image = load_image(dicom_file(tmp_path, pixels, bits_stored=bits))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.pixels.dtype == dtype
    assert image.meta.bits_stored == bits
    assert image.meta.format == "DICOM"


def test_dicom_signed_pixels(tmp_path):
    pixels = (ramp((16, 16), 4095).astype(np.int16) - 2048).astype(np.int16)
    image = load_image(dicom_file(tmp_path, pixels, bits_stored=12))
    assert image.pixels.dtype == np.int16
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.pixels.min() == -2048


def test_dicom_monochrome1_is_kept_as_stored_and_flagged(tmp_path):
    pixels = ramp((16, 16), 4095)
    image = load_image(dicom_file(tmp_path, pixels, bits_stored=12, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.meta.photometric == "MONOCHROME1" and image.meta.inverted
    shown = window_image(image)
    assert shown[0, 0] == 255 and shown[-1, -1] == 0  # low stored value = dense = white


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype"),
    [
        (1, -1024, np.int16),  # CT-like offset: negative results need a signed type
        (2, 0, np.uint16),
        (1, 100, np.uint16),
        (1, -70000, np.int32),  # beyond 16 bits
        (0.5, 10.25, np.float32),
    ],
)
def test_dicom_rescale(tmp_path, slope, intercept, dtype):
    stored = ramp((16, 16), 4095)
    image = load_image(dicom_file(tmp_path, stored, bits_stored=12, slope=slope, intercept=intercept))
    assert image.pixels.dtype == dtype
    np.testing.assert_allclose(image.pixels, stored.astype(np.float64) * slope + intercept)


def test_dicom_8bit_rescale_keeps_integers(tmp_path):
    stored = ramp((8, 8), 255, np.uint8)
    image = load_image(dicom_file(tmp_path, stored, slope=1, intercept=1000))
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, stored.astype(int) + 1000)


def test_dicom_window_first_pair_on_modality_values(tmp_path):
    path = dicom_file(tmp_path, ramp((8, 8), 4095), bits_stored=12, intercept=-1024, window=[(40, 400), (600, 1200)])
    window = load_image(path).meta.default_window
    assert (window.center, window.width, window.source) == (40, 400, "dicom")


def test_dicom_voi_lut_linear_gives_its_input_range(tmp_path):
    lut = np.arange(0, 4096, 4)  # 1024 entries ramping over the whole table
    path = dicom_file(tmp_path, ramp((8, 8), 4095), bits_stored=12, voi_lut=(100, lut))
    window = load_image(path).meta.default_window
    assert window.source == "voi_lut"
    assert (window.low, window.high) == (100, 100 + 1024)


def test_dicom_voi_lut_with_flat_ends_gives_the_ramp(tmp_path):
    lut = np.clip(np.arange(2048) - 500, 0, 1000) * 4  # flat until 500, ramps to 1500, flat after
    path = dicom_file(tmp_path, ramp((8, 8), 4095), bits_stored=12, voi_lut=(0, lut))
    window = load_image(path).meta.default_window
    assert window.low == pytest.approx(500, abs=1) and window.high == pytest.approx(1500, abs=1)


def test_dicom_window_wins_over_voi_lut_and_none_without_either(tmp_path):
    both = dicom_file(
        tmp_path, ramp((8, 8), 4095), "b.dcm", bits_stored=12, window=(1000, 500), voi_lut=(0, np.arange(4096))
    )
    assert load_image(both).meta.default_window.source == "dicom"
    neither = dicom_file(tmp_path, ramp((8, 8), 4095), "n.dcm", bits_stored=12)
    assert load_image(neither).meta.default_window is None


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_dicom_compressed_lossless_equals_uncompressed(tmp_path, syntax):
    pixels = ramp((64, 48), 4095)  # OpenJPEG needs at least 32 px per side for its default levels
    pixels[5:9, 3:20] = 4000
    image = load_image(dicom_file(tmp_path, pixels, bits_stored=12, transfer_syntax=syntax))
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.meta.transfer_syntax == syntax.name


@pytest.mark.parametrize("implicit", [False, True])
def test_dicom_without_preamble_or_file_meta(tmp_path, implicit):
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    pixels = ramp((16, 16), 4095)
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    path = dicom_file(tmp_path, pixels, "bare", bits_stored=12, preamble=False, transfer_syntax=syntax)
    assert path.read_bytes()[:2] == b"\x08\x00" and path.read_bytes()[128:132] != b"DICM"
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.meta.transfer_syntax == syntax.name
    assert image.meta.patient["PatientName"] == "Doe^Jane"


def test_dicom_multiframe_gives_first_frame(tmp_path):
    frames = np.stack([ramp((16, 16), 4095), np.full((16, 16), 7, np.uint16), np.zeros((16, 16), np.uint16)])
    for syntax in (None, RLELossless):
        kwargs = {"transfer_syntax": syntax} if syntax else {}
        image = load_image(dicom_file(tmp_path, frames, bits_stored=12, **kwargs))
        np.testing.assert_array_equal(image.pixels, frames[0])
        assert (image.meta.number_of_frames, image.meta.frame_index) == (3, 0)


def test_dicom_rgb_and_ybr_become_luminance(tmp_path):
    rgb = colour_bars_rgb()
    image = load_image(dicom_file(tmp_path, rgb, "rgb.dcm", photometric="RGB"))
    assert image.meta.original_channels == 3 and image.meta.photometric == "MONOCHROME2"
    assert [int(image.pixels[4, 4 + 8 * i]) for i in range(3)] == pytest.approx(list(LUMA.values()), abs=1)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    image = load_image(dicom_file(tmp_path, ybr, "ybr.dcm", photometric="YBR_FULL"))
    assert [int(image.pixels[4, 4 + 8 * i]) for i in range(3)] == pytest.approx(list(LUMA.values()), abs=2)


def test_dicom_palette_colour():
    image = load_image(pydicom_file("examples_palette.dcm"))
    assert image.pixels.ndim == 2 and image.meta.original_channels == 3
    assert image.pixels.max() > image.pixels.min()


def test_dicom_metadata_and_identifiers_kept_apart(tmp_path):
    long_comment = "x" * 1000
    path = dicom_file(
        tmp_path,
        ramp((10, 12), 4095),
        bits_stored=12,
        pixel_spacing=(0.2, 0.25),
        imager_pixel_spacing=(0.143, 0.143),
        voi_lut=(0, np.arange(16)),
        extra={"ImageComments": long_comment, "SeriesDescription": "PA ERECT"},
    )
    meta = load_image(path).meta
    assert meta.pixel_spacing == (0.2, 0.25) and meta.spacing_source == "PixelSpacing"
    assert (meta.view_position, meta.patient_age, meta.patient_sex, meta.modality) == ("PA", "054Y", "F", "DX")
    assert meta.patient == {"PatientName": "Doe^Jane", "PatientID": "PID-0001", "PatientBirthDate": "19700101"}
    assert meta.study["AccessionNumber"] == "ACC-0001"
    assert meta.study["SeriesDescription"] == "PA ERECT"
    assert {"StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "Modality", "InstitutionName"} <= set(meta.study)
    assert not set(meta.study) & set(meta.patient)
    tags = {row[1]: row for row in meta.tags}
    assert tags["PatientName"] == ("(0010,0010)", "PatientName", "PN", "Doe^Jane")
    assert tags["VOILUTSequence"][3] == "<1 items>"
    assert tags["TransferSyntaxUID"][0] == "(0002,0010)"
    assert "PixelData" not in tags
    assert len(tags["ImageComments"][3]) <= 200

    only_imager = dicom_file(tmp_path, ramp((4, 4), 255), "i.dcm", imager_pixel_spacing=(0.15, 0.16))
    meta = load_image(only_imager).meta
    assert meta.pixel_spacing == (0.15, 0.16) and meta.spacing_source == "ImagerPixelSpacing"
    none = dicom_file(tmp_path, ramp((4, 4), 255), "n.dcm", imager_pixel_spacing=None, patient_name=None)
    meta = load_image(none).meta
    assert meta.pixel_spacing is None and meta.spacing_source == ""
    assert "PatientName" not in meta.patient


def test_dicom_excess_pixel_data_warns_but_loads(tmp_path):
    ds = make_dicom(None, ramp((16, 16), 4095), bits_stored=12)
    ds.PixelData = ds.PixelData + b"\x00" * 64
    save_dicom(ds, tmp_path / "padded.dcm")
    image = load_image(tmp_path / "padded.dcm")
    np.testing.assert_array_equal(image.pixels, ramp((16, 16), 4095))
    assert image.extra["warnings"] and "padding" in image.extra["warnings"][0]


def test_big_endian_dicom_gives_native_pixels():
    image = load_image(pydicom_file("MR_small_bigendian.dcm"))
    reference = load_image(pydicom_file("MR_small.dcm"))
    assert image.pixels.dtype.isnative
    np.testing.assert_array_equal(image.pixels, reference.pixels)


@pytest.mark.parametrize(
    "compressed",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_pydicom_compressed_files_match_uncompressed(compressed):
    reference = load_image(pydicom_file("MR_small.dcm")).pixels
    np.testing.assert_array_equal(load_image(pydicom_file(compressed)).pixels, reference)


@pytest.mark.parametrize(
    ("name", "syntax_words"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline"),
        ("JPGExtended.dcm", "JPEG Extended"),
        ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless"),
        ("JPEGLSNearLossless_16.dcm", "JPEG-LS"),
    ],
)
def test_pydicom_jpeg_family_decodes(name, syntax_words):
    image = load_image(pydicom_file(name))
    assert syntax_words in image.meta.transfer_syntax
    assert image.pixels.ndim == 2 and image.pixels.std() > 0


def test_missing_decoder_is_named(monkeypatch):
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("numpy", "pyjpegls>=1.2")})
    with pytest.raises(ImageLoadError) as err:
        load_image(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    message = str(err.value)
    assert "JPEG-LS Lossless" in message and "no decoder installed" in message and "pyjpegls" in message


def test_unknown_compression_is_named(tmp_path):
    ds = make_dicom(None, ramp((8, 8), 255), bits_stored=8)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    save_dicom(ds, tmp_path / "odd.dcm")
    with pytest.raises(ImageLoadError, match="1.2.3.4.5.6.*not supported"):
        load_image(tmp_path / "odd.dcm")


# --------------------------------------------------------------------------- real chest DICOMs


@pytest.fixture(scope="module")
def rg1():
    """The NEMA WG04 chest radiograph (Philips CR, MONOCHROME1, 15 bit) in three encodings."""
    return {name: load_image(pydicom_file(f"RG1_{name}.dcm")) for name in ("UNCR", "J2KR", "J2KI")}


def test_real_chest_dicom_metadata(rg1):
    meta = rg1["UNCR"].meta
    assert meta.photometric == "MONOCHROME1" and meta.bits_stored == 15
    assert meta.view_position == "PA" and meta.modality == "CR"
    assert meta.default_window is not None and meta.default_window.source == "dicom"
    assert rg1["UNCR"].pixels.dtype == np.uint16 and rg1["UNCR"].shape == (1955, 1841)


def test_real_chest_jpeg2000_matches_uncompressed(rg1):
    reference = rg1["UNCR"].pixels.astype(np.int32)
    np.testing.assert_array_equal(rg1["J2KR"].pixels, rg1["UNCR"].pixels)  # lossless
    lossy = rg1["J2KI"].pixels.astype(np.int32)
    value_range = reference.max() - reference.min()
    assert np.abs(lossy - reference).mean() < 0.005 * value_range
    assert rg1["J2KI"].meta.transfer_syntax == "JPEG 2000 Image Compression"


def test_real_chest_monochrome1_displays_bone_bright(rg1):
    shown = window_image(rg1["UNCR"])
    h, w = shown.shape
    # The spine (centre) is dense and must be brighter than the air outside the body (edges)
    # and than the lung fields.
    spine = shown[h // 3 : 2 * h // 3, w // 2 - 20 : w // 2 + 20].mean()
    lungs = shown[h // 3 : 2 * h // 3, w // 4 - 40 : w // 4 + 40].mean()
    assert spine > lungs + 20


@pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="shared chest DICOMs not present")
@pytest.mark.parametrize("name", sorted(p.name for p in SHARED_DICOM.glob("*.dcm")) if SHARED_DICOM.is_dir() else [])
def test_shared_chest_dicoms_load(name):
    image = load_image(SHARED_DICOM / name)
    assert image.pixels.ndim == 2 and min(image.shape) >= 100
    assert image.meta.format == "DICOM"
    assert image.meta.inverted == ("MONO1" in name)
    shown = window_image(image)
    assert shown.std() > 10  # a real picture, not a flat field


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", sorted(EXPECTED_WORDS))
def test_bad_input_gives_clear_error(bad_inputs, name):
    with pytest.raises(ImageLoadError) as err:
        load_image(bad_inputs[name])
    message = str(err.value).lower()
    for word in EXPECTED_WORDS[name]:
        assert word in message, f"{word!r} missing from {message!r}"
    assert bad_inputs[name].name.lower() in message  # the user sees which file


def test_corpus_is_complete(bad_inputs):
    assert set(bad_inputs) == set(EXPECTED_WORDS)


def test_size_is_checked_before_decoding(bad_inputs, monkeypatch):
    calls = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: calls.append("png"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append("jpeg"))
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: calls.append("dicom"))
    for name in ("huge_png_header", "huge_jpeg_header", "huge_dicom_header"):
        with pytest.raises(ImageLoadError, match="too large"):
            load_image(bad_inputs[name])
    assert calls == []


def test_limit_is_per_side_too(tmp_path):
    ds = make_dicom(None, np.zeros((4, 4), np.uint8))
    ds.Rows, ds.Columns = 4, MAX_SIDE + 1  # few pixels in all, but an absurd width
    save_dicom(ds, tmp_path / "wide.dcm")
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "wide.dcm")


def test_missing_folder_and_odd_paths(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.dcm")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError):
        load_image(None)  # type: ignore[arg-type]
    with pytest.raises(ImageLoadError):
        load_image("bad\x00name.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path / "pipe")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(valid_png_bytes())
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o600)


def test_permission_error_is_explained(tmp_path, monkeypatch):
    """Root ignores file modes, so simulate what a locked file does to ``open``."""
    path = tmp_path / "locked.png"
    path.write_bytes(valid_png_bytes())
    real_open = Path.open

    def locked_open(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", locked_open)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path)


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"%PDF-1.7\n", "pdf"),
        (b"PK\x03\x04" + b"\x00" * 40, "zip"),
        (b"II*\x00" + b"\x00" * 40, "tiff"),
        (b"<!DOCTYPE html><html></html>", "web page"),
        (b"GIF89a" + b"\x00" * 20, "gif"),
    ],
)
def test_other_formats_are_named(tmp_path, head, words):
    path = tmp_path / "thing.dcm"
    path.write_bytes(head)
    with pytest.raises(ImageLoadError, match=f"(?i){words}"):
        load_image(path)


# --------------------------------------------------------------------------- property: no other exception


def _valid_dicom_bytes(**kwargs) -> bytes:
    directory = Path(tempfile.mkdtemp())
    try:
        make_dicom(directory / "v.dcm", ramp((16, 16), 4095), bits_stored=12, window=(2048, 4096), **kwargs)
        return (directory / "v.dcm").read_bytes()
    finally:
        shutil.rmtree(directory)


VALID = {
    "png": valid_png_bytes(16),
    "jpeg": valid_jpeg_bytes(16),
    "dicom": _valid_dicom_bytes(),
    "dicom_rle": _valid_dicom_bytes(transfer_syntax=RLELossless),
    "dicom_bare": _valid_dicom_bytes(preamble=False),
}
_SCRATCH = Path(tempfile.mkdtemp(prefix="loader-fuzz-"))


def _load_only_our_error(data: bytes) -> None:
    path = _SCRATCH / "fuzz.bin"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageLoadError as exc:
        assert str(exc)
        return
    assert image.pixels.ndim == 2 and image.pixels.size > 0


def test_decoder_panic_becomes_image_load_error(tmp_path):
    """pylibjpeg-rle is written in Rust; corrupt runs make it panic with a BaseException."""
    data = bytearray(VALID["dicom_rle"])
    data[-300] = 0x81  # a run that reaches past the end of its segment (found by the fuzz test below)
    (tmp_path / "bad_rle.dcm").write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match="RLE Lossless"):
        load_image(tmp_path / "bad_rle.dcm")


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=2048))
def test_random_bytes_raise_only_image_load_error(data):
    _load_only_our_error(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_raise_only_image_load_error(data):
    _load_only_our_error(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_sniff_format_never_raises(head):
    assert sniff_format(head) in (None, "PNG", "JPEG", "DICOM")


def test_first_pydicom_import_from_several_threads_at_once(tmp_path):
    """The viewer's loader opens a DICOM while another thread imports the exporters: both are
    the first pydicom imports of a fresh process, which once failed as a "damaged file"."""
    import subprocess
    import sys

    dcm = tmp_path / "a.dcm"
    make_dicom(dcm, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), bits_stored=12)
    script = f"""
import sys, threading
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from inference.loading import load_image
errors, barrier = [], threading.Barrier(4)
def load():
    barrier.wait()
    try:
        load_image({str(dcm)!r})
    except Exception as exc:
        errors.append(repr(exc))
def export():
    barrier.wait()
    try:
        import inference.export.dicom_sc  # noqa: F401
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=f) for f in (load, export, load, export)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- issue 17: bombs, pixels, warnings

BOMBS = ("jpeg_codestream_bomb", "jpegls_codestream_bomb", "j2k_codestream_bomb", "jp2_codestream_bomb")


def test_codestream_size_is_checked_before_decoding(bad_inputs, monkeypatch):
    """The header says 64 x 64; the decoders would allocate 60000 x 60000 from the codestream."""
    calls = []
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: calls.append("dicom"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append("jpeg"))
    for name in (*BOMBS, "jpeg_second_frame_header", "codestream_size_mismatch"):
        with pytest.raises(ImageLoadError, match="too large|does not match"):
            load_image(bad_inputs[name])
    assert calls == []


def test_codestream_bombs_fail_fast_under_a_memory_cap(bad_inputs):
    """In a process that may not take more than 1.5 GB, each bomb is refused with our error, quickly."""
    import subprocess
    import sys

    paths = [str(bad_inputs[name]) for name in (*BOMBS, "jpeg_second_frame_header")]
    script = f"""
import resource, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from inference.image import ImageLoadError
from inference.loading import load_image
import inference.loading, pydicom.pixels, PIL.Image  # imports count against the cap before it is set
cap = 1536 * 1024**2
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
for path in {paths!r}:
    start = time.perf_counter()
    try:
        load_image(path)
        print("LOADED", path)
    except ImageLoadError as exc:
        print("REFUSED", round(time.perf_counter() - start, 3), exc)
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(paths), out.stdout + out.stderr[-2000:]
    for line in lines:
        status, seconds, message = line.split(" ", 2)
        assert status == "REFUSED" and "too large" in message and "memory" not in message
        assert float(seconds) < 2.0


def test_codestream_sizes_skip_thumbnails_and_read_every_header():
    from inference.codestream import FrameSize, codestream_sizes, j2k_sizes, jpeg_sizes

    main = valid_jpeg_bytes(64)
    thumb = valid_jpeg_bytes(16)
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb  # an EXIF-like thumbnail inside APP1
    sizes = jpeg_sizes(main[:2] + app1 + main[2:])
    assert [(s.width, s.height) for s in sizes] == [(64, 64)]
    # A hierarchical stream's DHP (the whole image) counts like a frame header.
    dhp = b"\xff\xde\x00\x0b\x08" + (300).to_bytes(2, "big") + (400).to_bytes(2, "big") + b"\x01\x01\x11\x00"
    assert jpeg_sizes(main[:2] + dhp + main[2:])[0] == FrameSize(400, 300, 1, 8, "DHP")
    # JPEG-LS may move its size to an LSE segment (oversize dimension).
    lse = b"\xff\xf8\x00\x0d\x04\x04" + (70000).to_bytes(4, "big") + (80000).to_bytes(4, "big")
    oversize = jpeg_sizes(b"\xff\xd8" + lse + b"\xff\xd9")[0]
    assert (oversize.width, oversize.height) == (80000, 70000)
    # JPEG 2000: the image area is Xsiz - XOsiz by Ysiz - YOsiz.
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + b"".join(
        v.to_bytes(4, "big") for v in (1100, 900, 100, 50, 1100, 900, 0, 0)
    )
    siz += b"\x00\x01\x0b\x01\x01"
    assert j2k_sizes(siz) == [FrameSize(1000, 850, 1, 12, "SIZ")]
    # An EOI before any scan ends nothing (Pillow reads on and would meet the second header).
    sof = main.find(b"\xff\xc0")
    second = main[sof : sof + 13].replace(b"\x00\x40\x00\x40", b"\xea\x60\xea\x60")  # 60000 x 60000
    hidden = main[:sof] + b"\xff\xd9" + second + main[sof:]
    assert [(s.width, s.height) for s in jpeg_sizes(hidden)] == [(60000, 60000), (64, 64)]
    assert codestream_sizes(b"\x00\x00garbage") is None
    assert jpeg_sizes(b"\xff\xd8\xff\xc0\x00") == []  # cut short: nothing, never an exception


def test_legitimate_compressed_dicom_still_loads(tmp_path):
    """The codestream check accepts a JPEG-in-DICOM whose sizes agree (and a J2K one, see above)."""
    from pydicom.uid import JPEGBaseline8Bit

    from tests.bad_inputs import encapsulated_dicom

    (tmp_path / "ok.dcm").write_bytes(encapsulated_dicom(valid_jpeg_bytes(64), JPEGBaseline8Bit))
    image = load_image(tmp_path / "ok.dcm")
    assert image.shape == (64, 64)


def test_user_messages_carry_no_python_internals(bad_inputs):
    for name, path in bad_inputs.items():
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        text = str(err.value)
        for internal in ("Error:", "NoneType", "has no len", "Traceback", "Python int"):
            assert internal not in text, f"{name}: {text}"


def test_unexpected_exceptions_become_sentences(tmp_path, monkeypatch):
    import inference.loading as loading

    path = tmp_path / "a.png"
    path.write_bytes(valid_png_bytes())
    for exc, words in (
        (OverflowError("Python int too large to convert to C long"), "out of range"),
        (TypeError("object of type 'NoneType' has no len()"), "missing"),
        (RuntimeError("boom"), "damaged"),
    ):

        def fail(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(loading, "_load_png", fail)
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        assert words in str(err.value) and type(exc).__name__ not in str(err.value) and "len()" not in str(err.value)


def test_nan_pixels_are_refused_and_xrayimage_stays_finite():
    from inference.image import ImageMeta, XRayImage

    meta = ImageMeta(path="mem", format="DICOM", width=2, height=1, bits_stored=32)
    with pytest.raises(ValueError, match="finite"):
        XRayImage(pixels=np.array([[0.0, np.inf]], np.float32), meta=meta)
    XRayImage(pixels=np.array([[0.0, 1.0]], np.float32), meta=meta)


def test_nearly_blank_image_is_refused_but_a_sparse_real_one_loads(tmp_path):
    almost = np.full((100, 100), 12, np.uint8)
    almost[0, :10] = 200  # 0.1% of the pixels differ
    with pytest.raises(ImageLoadError, match="practically blank"):
        load_image(write_png(tmp_path / "almost.png", almost))
    padded = np.zeros((100, 100), np.uint8)  # a film with a wide black border still loads
    padded[30:70, 30:70] = ramp((40, 40), 255, np.uint8)
    assert load_image(write_png(tmp_path / "padded.png", padded)).shape == (100, 100)


def test_jpeg_with_padding_at_the_bottom_is_not_taken_for_a_grey_fill(tmp_path):
    img = np.zeros((256, 256), np.uint8)
    img[:128] = np.tile(np.arange(0, 256, dtype=np.uint8), (128, 1))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "padded.jpg").write_bytes(buf.tobytes())
    assert load_image(tmp_path / "padded.jpg").shape == (256, 256)
    # A film letterboxed onto dark grey (as one public COVID-19 image is): the shade runs down
    # the side too, so it is padding, not the decoder's fill.
    framed = np.full((224, 224), 27, np.uint8)
    framed[:170, 48:208] = ramp((170, 160), 200, np.uint8) + 30
    ok, buf = cv2.imencode(".jpg", framed, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "framed.jpg").write_bytes(buf.tobytes())
    assert load_image(tmp_path / "framed.jpg").shape == (224, 224)


def test_deflated_dicom_expanding_too_far_is_refused(tmp_path, monkeypatch):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    import inference.loading as loading

    ds = make_dicom(None, ramp((64, 64), 4095), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    save_dicom(ds, tmp_path / "deflated.dcm")
    assert load_image(tmp_path / "deflated.dcm").shape == (64, 64)  # an honest deflated file loads
    monkeypatch.setattr(loading, "MAX_INFLATED_BYTES", 4096)  # ... one that expands past the limit does not
    with pytest.raises(ImageLoadError, match="expands to more than"):
        load_image(tmp_path / "deflated.dcm")


def _padded_dicom(path: Path, padding: int) -> Path:
    ds = make_dicom(None, ramp((16, 16), 4095), bits_stored=12)
    ds.PixelData = ds.PixelData + b"\x00" * padding
    save_dicom(ds, path)
    return path


def test_warnings_are_collected_per_file_on_concurrent_threads(tmp_path):
    """Two files decoded at once on two threads: each gets only its own pydicom warning, and the
    process's warning filters are the same afterwards."""
    import threading
    import warnings

    files = {64: _padded_dicom(tmp_path / "a.dcm", 64), 128: _padded_dicom(tmp_path / "b.dcm", 128)}
    load_image(files[64])  # first use adds the (once-only) filter
    before = list(warnings.filters)
    barrier = threading.Barrier(2)
    seen: dict[int, list[list[str]]] = {64: [], 128: []}
    errors: list[BaseException] = []

    def work(padding: int) -> None:
        try:
            for _ in range(50):
                barrier.wait(timeout=10)
                seen[padding].append(load_image(files[padding]).extra.get("warnings", []))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in files]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    for padding, other in ((64, 128), (128, 64)):
        assert len(seen[padding]) == 50
        for messages in seen[padding]:
            assert len(messages) == 1 and f"{padding} bytes of excess padding" in messages[0], messages
            assert f"{other} bytes" not in messages[0]
    assert warnings.filters == before


def test_a_bomb_in_a_later_frame_is_refused_too(tmp_path):
    """Only frame 0 is decoded, but a frame cut differently must not slip a size past the check."""
    import struct

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from tests.bad_inputs import BOMB_SIDE

    good = valid_jpeg_bytes(64)
    bomb = bytearray(good)
    struct.pack_into(">HH", bomb, bomb.find(b"\xff\xc0") + 5, BOMB_SIDE, BOMB_SIDE)
    ds = make_dicom(None, ramp((64, 64), 255, np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.NumberOfFrames = 2
    ds.PixelData = encapsulate([good, bytes(bomb)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    save_dicom(ds, tmp_path / "two.dcm")
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "two.dcm")
