"""Window/level maths and the initial window a reading starts with."""

from __future__ import annotations

import numpy as np
import pytest

from inference.display import (
    AUTO_PERCENTILES,
    apply_window,
    auto_window,
    full_range_window,
    initial_window,
    window_image,
)
from inference.image import ImageMeta, Window, XRayImage
from inference.loading import load_image
from tests.dicom_factory import make_dicom


def make_image(pixels: np.ndarray, bits: int, **meta) -> XRayImage:
    h, w = pixels.shape
    fmt = meta.pop("format", "DICOM")
    return XRayImage(pixels=pixels, meta=ImageMeta(path="mem", format=fmt, width=w, height=h, bits_stored=bits, **meta))


# --------------------------------------------------------------------------- apply_window


def test_window_edges_map_to_black_and_white_and_clip():
    window = Window(center=1000, width=400)  # 800..1200
    pixels = np.array([[0, 800, 1000, 1200, 5000]], dtype=np.uint16)
    out = apply_window(pixels, window)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 128, 255, 255]]


def test_window_is_linear_between_edges():
    window = Window(center=50, width=100)  # 0..100
    pixels = np.arange(0, 101, dtype=np.float32)[None, :]
    out = apply_window(pixels, window).astype(int)[0]
    np.testing.assert_array_equal(out, (np.arange(0, 101) * 255 + 50) // 100)  # round half up, exactly


def test_invert_swaps_black_and_white():
    window = Window(center=0, width=200)  # -100..100, signed values
    pixels = np.array([[-300, -100, 0, 100]], dtype=np.int16)
    plain = apply_window(pixels, window)
    inverted = apply_window(pixels, window, invert=True)
    assert plain.tolist() == [[0, 0, 128, 255]]
    np.testing.assert_array_equal(inverted.astype(int), 255 - plain.astype(int))


def test_zero_width_window_does_not_divide_by_zero():
    with np.errstate(all="raise"):
        out = apply_window(np.array([[9, 10, 11]], np.uint16), Window(center=10, width=0))
    assert out.tolist() == [[0, 0, 255]]  # a step at the centre


# --------------------------------------------------------------------------- window_image


def test_monochrome1_is_displayed_inverted():
    pixels = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    window = Window(center=2048, width=4096)
    mono2 = make_image(pixels, 12, default_window=window)
    mono1 = make_image(pixels, 12, default_window=window, photometric="MONOCHROME1")
    shown1, shown2 = window_image(mono1), window_image(mono2)
    np.testing.assert_array_equal(shown1.astype(int), 255 - shown2.astype(int))
    assert shown1[0, 0] == 255  # lowest stored value is white in MONOCHROME1
    # The user's invert toggle works on top of the photometric interpretation.
    np.testing.assert_array_equal(window_image(mono1, invert=True), shown2)


def test_monochrome1_file_shows_bone_bright(tmp_path):
    """A MONOCHROME1 DICOM where 'bone' is stored low and 'air' high displays bone white."""
    stored = np.full((32, 32), 3800, np.uint16)  # air: high values in MONOCHROME1
    stored[8:24, 12:20] = 300  # a dense (bony) block: low values
    make_dicom(tmp_path / "m1.dcm", stored, bits_stored=12, photometric="MONOCHROME1", window=(2048, 4096))
    shown = window_image(load_image(tmp_path / "m1.dcm"))
    assert shown[16, 16] > 200 and shown[0, 0] < 40


# --------------------------------------------------------------------------- automatic and initial windows


def test_auto_window_ignores_outliers_on_16bit_data():
    rng = np.random.default_rng(0)
    pixels = rng.normal(20000, 2000, size=(200, 200)).clip(0, 65535).astype(np.uint16)
    pixels[0, :80] = 65535  # a burnt-in label (0.2% of the pixels)
    pixels[-1, :80] = 0  # a collimator edge
    window = auto_window(pixels)
    lo, hi = np.percentile(pixels, AUTO_PERCENTILES)
    assert window.source == "auto"
    assert window.low == pytest.approx(lo) and window.high == pytest.approx(hi)
    assert 10000 < window.low < window.high < 30000  # the outliers do not stretch it


def test_auto_window_sampling_on_large_images_stays_close():
    rng = np.random.default_rng(1)
    pixels = rng.integers(1000, 3000, size=(1200, 1000), dtype=np.uint16)  # > 1 Mpx takes the sampled path
    window = auto_window(pixels)
    lo, hi = np.percentile(pixels, AUTO_PERCENTILES)
    assert abs(window.low - lo) < 20 and abs(window.high - hi) < 20


def test_auto_window_of_a_flat_image_has_positive_width():
    window = auto_window(np.full((8, 8), 7, np.uint16))
    assert window.width > 0


def test_full_range_window():
    window = full_range_window(12)
    assert (window.low, window.high) == (0, 4095)


def test_initial_window_prefers_the_stored_one():
    stored = Window(center=40, width=400, source="dicom")
    image = make_image(np.zeros((4, 4), np.int16), 12, default_window=stored)
    assert initial_window(image) is stored


def test_initial_window_8bit_photo_uses_full_range():
    image = make_image(np.full((4, 4), 100, np.uint8), 8, format="JPEG")
    window = initial_window(image)
    assert (window.low, window.high, window.source) == (0, 255, "full_range")


def test_initial_window_16bit_without_stored_window_is_automatic():
    pixels = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    window = initial_window(make_image(pixels, 16, format="PNG"))
    assert window.source == "auto" and 1000 <= window.low < window.high <= 3000


def test_initial_window_low_bit_dicom_uses_its_own_depth():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1  # a 1-bit image: 0/1 must show black/white, not two shades of black
    shown = window_image(make_image(mask, 1))
    assert shown.max() == 255 and shown.min() == 0


def test_initial_window_8bit_dicom_rescaled_beyond_its_depth_is_automatic():
    pixels = np.arange(1000, 1064, dtype=np.uint16).reshape(8, 8)  # 8 stored bits + intercept 1000
    window = initial_window(make_image(pixels, 8))
    assert window.source == "auto" and window.low >= 1000


# ------------------------------------------------------------------ unusable stored windows (issue 13, section 3)


def _dx_16bit(tmp_path, **kwargs):
    """The toolkit test file's case: 16-bit DX, stored window 2725/5310, pixels 32744-65535."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(32744, 65536, size=(64, 64)).astype(np.uint16)
    pixels[:32] = np.sort(pixels[:32], axis=1)  # some structure
    make_dicom(tmp_path / "dx.dcm", pixels, bits_stored=16, **kwargs)
    return load_image(tmp_path / "dx.dcm")


def test_stored_window_outside_the_pixels_falls_back_to_the_percentile_window(tmp_path):
    from inference.preprocess import PreprocessConfig, preprocess

    image = _dx_16bit(tmp_path, window=(2725, 5310))
    assert image.meta.default_window is None
    assert "2725" in image.meta.window_note and "100% of the pixels white" in image.meta.window_note
    window = initial_window(image)
    assert window.source == "auto"
    shown = window_image(image)
    assert shown.mean() < 200 and shown.std() > 30  # not white: the film is visible
    x, _ = preprocess(image, PreprocessConfig(size=32))
    assert float(x.mean()) < 0.8 and float(x.std()) > 0.1  # the model is fed the same visible film


def test_a_usable_stored_window_is_kept_without_a_note(tmp_path):
    image = _dx_16bit(tmp_path, window=(49000, 33000))
    assert image.meta.default_window is not None and image.meta.window_note == ""
    assert initial_window(image).source == "dicom"


def test_monochrome1_clipped_window_is_described_as_shown(tmp_path):
    image = _dx_16bit(tmp_path, window=(2725, 5310), photometric="MONOCHROME1")
    assert "black" in image.meta.window_note  # high values are dark in MONOCHROME1


def test_absurdly_wide_window_falls_back(tmp_path):
    image = _dx_16bit(tmp_path, window=(2048, 1e308))
    assert image.meta.default_window is None and "one shade of gray" in image.meta.window_note
    assert window_image(image).std() > 30


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        (Window(5000, 100), "black"),
        (Window(-5000, 100), "white"),
        (Window(500, 1e12), "one shade"),
        (Window(500, 1000), None),
        (Window(float("nan"), 10), "number"),
    ],
)
def test_window_problem(window, problem):
    from inference.display import window_problem

    pixels = np.arange(1000, dtype=np.uint16).reshape(10, 100)
    found = window_problem(pixels, window)
    assert (found is None) if problem is None else (problem in found)


def test_apply_window_never_gives_nan_for_extreme_windows():
    pixels = np.array([[0, 1000, 4095]], np.uint16)
    for window in (Window(0, 1e308), Window(1e308, 10), Window(-1e308, 1e308), Window(5, float("inf"))):
        with np.errstate(all="ignore"):
            out = apply_window(pixels, window)
        assert out.dtype == np.uint8 and out.shape == (1, 3)


def test_sigmoid_voi_lut_function_is_applied(tmp_path):
    """DICOM's SIGMOID: 255 / (1 + exp(-4 (x - c) / w)); the same curve pydicom's apply_windowing draws."""
    from pydicom.pixels import apply_windowing

    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096).astype(np.uint16)
    ds = make_dicom(
        tmp_path / "s.dcm", pixels, bits_stored=12, window=(2048, 1024), extra={"VOILUTFunction": "SIGMOID"}
    )
    image = load_image(tmp_path / "s.dcm")
    assert image.meta.default_window.function == "SIGMOID"
    shown = window_image(image).astype(np.float64)
    ds.BitsStored = 8  # pydicom scales the curve to the stored bit depth: 8 bits gives 0..255
    expected = apply_windowing(pixels.astype(np.float64), ds)
    assert np.abs(shown - expected).max() <= 1.0
    linear = apply_window(pixels, Window(2048, 1024)).astype(np.float64)
    assert np.abs(shown - linear).max() > 20  # not the linear ramp
