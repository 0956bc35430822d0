"""The one preprocessing: what the model sees for any loaded image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.display import window_image
from inference.image import ImageMeta, Window, XRayImage
from inference.loading import load_image
from inference.preprocess import (
    Geometry,
    PreprocessConfig,
    preprocess,
    preprocess_uint8,
    resize_gray,
    to_model_input,
)
from tests.dicom_factory import make_dicom

SMALL = PreprocessConfig(size=32)


def gray_image(pixels: np.ndarray, bits: int = 8, **meta) -> XRayImage:
    h, w = pixels.shape
    return XRayImage(
        pixels=pixels, meta=ImageMeta(path="mem", format="PNG", width=w, height=h, bits_stored=bits, **meta)
    )


def chest_like(height: int = 96, width: int = 80) -> np.ndarray:
    """Dark lungs, bright mediastinum and border: enough structure to compare inputs."""
    img = np.full((height, width), 200, np.uint8)
    img[height // 6 : -height // 6, width // 8 : width // 2 - 4] = 60
    img[height // 6 : -height // 6, width // 2 + 4 : -width // 8] = 70
    return img


def test_shape_dtype_and_range():
    x, geometry = preprocess(gray_image(chest_like()), SMALL)
    assert x.shape == (32, 32, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() == pytest.approx(200 / 255, abs=1 / 255)  # 8-bit images reach the model as encoded
    assert geometry == Geometry(original_shape=(96, 80), crop_box=(0, 0, 80, 96), size=32)


def test_channels_are_replicated():
    x, _ = preprocess(gray_image(chest_like()), PreprocessConfig(size=32, channels=3))
    assert x.shape == (32, 32, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_preprocess_is_uint8_then_scaling():
    image = gray_image(chest_like())
    small, geometry = preprocess_uint8(image, SMALL)
    x, geometry2 = preprocess(image, SMALL)
    assert small.dtype == np.uint8 and small.shape == (32, 32)
    np.testing.assert_array_equal(to_model_input(small, SMALL), x)
    assert geometry == geometry2
    batch = to_model_input(np.stack([small, small]), PreprocessConfig(size=32, channels=3))
    assert batch.shape == (2, 32, 32, 3)


def test_aspect_ratio_is_squashed_not_letterboxed():
    wide = np.full((40, 120), 255, np.uint8)  # 3:1
    wide[:, :40] = 0  # left third dark
    x, _ = preprocess(gray_image(wide), SMALL)
    x = x[..., 0]
    assert x.shape == (32, 32)
    # No bars: the top and bottom rows are image content, and the left third stays the left third.
    assert x[0, -1] == 1.0 and x[-1, -1] == 1.0
    assert x[:, :9].max() == 0.0 and x[:, 12:].min() == 1.0


def test_shrinking_is_anti_aliased():
    """INTER_AREA averages: a one-pixel checkerboard (a grid, fine text) becomes even gray, not moiré."""
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = resize_gray(checker, 32)
    assert np.abs(small.astype(int) - 128).max() <= 1


def test_enlarging_uses_linear_interpolation():
    tiny = np.array([[0, 255]], np.uint8).repeat(2, axis=0)
    big = resize_gray(tiny, 8)
    assert big.shape == (8, 8)
    assert 0 < big[0, 3] < 255  # a ramp, not nearest-neighbour blocks


def test_monochrome1_gives_the_same_input_as_monochrome2(tmp_path):
    rng = np.random.default_rng(3)
    mono2 = (chest_like().astype(np.uint16) * 16 + rng.integers(0, 16, (96, 80))).astype(np.uint16)  # 12 bit
    mono1 = (4095 - mono2).astype(np.uint16)
    make_dicom(tmp_path / "m2.dcm", mono2, bits_stored=12, window=(2000, 3000))
    make_dicom(tmp_path / "m1.dcm", mono1, bits_stored=12, photometric="MONOCHROME1", window=(4095 - 2000, 3000))
    x2, _ = preprocess(load_image(tmp_path / "m2.dcm"), SMALL)
    x1, _ = preprocess(load_image(tmp_path / "m1.dcm"), SMALL)
    assert np.abs(x1 - x2).max() <= 1 / 255 + 1e-6
    assert x2.std() > 0.1  # a real picture, not two flat fields that trivially agree


def test_monochrome1_with_automatic_window_is_inverted_too():
    pixels = (chest_like().astype(np.uint16) * 16).astype(np.uint16)
    mono2 = gray_image(pixels, 12)
    mono1 = gray_image((4095 - pixels).astype(np.uint16), 12, photometric="MONOCHROME1")
    x2, _ = preprocess(mono2, SMALL)
    x1, _ = preprocess(mono1, SMALL)
    assert np.abs(x1 - x2).max() <= 1 / 255 + 1e-6


def test_16bit_dicom_and_its_windowed_8bit_png_give_the_same_input(tmp_path):
    rng = np.random.default_rng(4)
    pixels = (chest_like(128, 112).astype(np.uint16) * 200 + rng.integers(0, 500, (128, 112))).astype(np.uint16)
    make_dicom(tmp_path / "d.dcm", pixels, bits_stored=16, window=(25000, 40000))
    dicom = load_image(tmp_path / "d.dcm")
    ok, png = cv2.imencode(".png", window_image(dicom))  # what an export / a public dataset would hold
    (tmp_path / "d.png").write_bytes(png.tobytes())
    from_png = load_image(tmp_path / "d.png")
    config = PreprocessConfig(size=64)
    a, _ = preprocess(dicom, config)
    b, _ = preprocess(from_png, config)
    assert np.abs(a - b).max() <= 1 / 255 + 1e-6


def test_clahe_raises_local_contrast():
    rng = np.random.default_rng(5)
    # Lung texture squeezed into a narrow band of gray values (an under-exposed film).
    low_contrast = (chest_like(128, 128) // 4 + 100 + rng.integers(-3, 4, (128, 128))).astype(np.uint8)
    plain, _ = preprocess(gray_image(low_contrast), PreprocessConfig(size=64))
    equalised, _ = preprocess(gray_image(low_contrast), PreprocessConfig(size=64, clahe=True))
    assert equalised.std() > plain.std() * 1.15
    assert equalised.shape == plain.shape and equalised.min() >= 0 and equalised.max() <= 1


def test_crop_box_geometry_round_trip():
    h, w = 120, 100
    box = (20, 30, 80, 110)  # x0, y0, x1, y1
    pixels = np.zeros((h, w), np.uint8)
    pixels[60:80, 40:60] = 255  # a bright square inside the box
    config = PreprocessConfig(size=40, crop="lungs")
    x, geometry = preprocess(gray_image(pixels), config, crop_box=box)
    assert geometry.crop_box == box and geometry.original_shape == (h, w)
    # Treat the model input itself as a heat map: mapped back, it must land on the square.
    back = geometry.to_original(x[..., 0])
    assert back.shape == (h, w) and back.dtype == np.float32
    assert back[65:75, 45:55].min() > 0.9  # inside the square
    assert back[:30, :].max() == 0 and back[:, :20].max() == 0 and back[:, 80:].max() == 0  # outside the box
    assert back[35:55, 25:75].max() < 0.1  # inside the box but outside the square
    # A coarse 7x7 map (a Grad-CAM grid) is stretched over the box, not over the image.
    coarse = geometry.to_original(np.ones((7, 7), np.float32))
    assert coarse[30:110, 20:80].min() == 1.0 and coarse.sum() == pytest.approx(60 * 80)


def test_crop_box_is_clipped_to_the_image_and_ignored_without_crop():
    pixels = chest_like()
    _, geometry = preprocess(gray_image(pixels), PreprocessConfig(size=16, crop="lungs"), crop_box=(-10, -5, 500, 90))
    assert geometry.crop_box == (0, 0, 80, 90)
    _, geometry = preprocess(gray_image(pixels), PreprocessConfig(size=16), crop_box=(10, 10, 20, 20))
    assert geometry.crop_box == (0, 0, 80, 96)  # crop="none": the box is not used


def test_geometry_without_crop_is_a_plain_resize():
    geometry = Geometry(original_shape=(50, 40), crop_box=(0, 0, 40, 50), size=8)
    back = geometry.to_original(np.arange(64, dtype=np.float32).reshape(8, 8))
    assert back.shape == (50, 40)
    assert back[0, 0] < back[-1, -1]


def test_config_round_trip_and_unknown_keys():
    config = PreprocessConfig(size=256, channels=3, clahe=True, crop="lungs")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown preprocessing parameters: colour"):
        PreprocessConfig.from_dict({**config.to_dict(), "colour": True})


def test_stored_window_drives_the_intensity():
    pixels = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    narrow = gray_image(pixels, 12, default_window=Window(center=1000, width=200, source="dicom"))
    x, _ = preprocess(narrow, SMALL)
    # Below 900 black, above 1100 white: most of the image saturates.
    assert (x == 0).mean() > 0.15 and (x == 1).mean() > 0.6


def test_unusable_stored_window_feeds_the_model_the_percentile_window(tmp_path):
    """Issue 13, section 3: centre 2725 / width 5310 on pixels 32744-65535 once fed the model a
    white square; now the model sees what the same pixels without a stored window give."""
    rng = np.random.default_rng(5)
    pixels = np.sort(rng.integers(32744, 65536, size=(48, 48)), axis=1).astype(np.uint16)
    make_dicom(tmp_path / "clipped.dcm", pixels, bits_stored=16, window=(2725, 5310))
    make_dicom(tmp_path / "plain.dcm", pixels, bits_stored=16)
    clipped, plain = load_image(tmp_path / "clipped.dcm"), load_image(tmp_path / "plain.dcm")
    assert clipped.meta.window_note and not plain.meta.window_note
    x_clipped, _ = preprocess(clipped, SMALL)
    x_plain, _ = preprocess(plain, SMALL)
    np.testing.assert_array_equal(x_clipped, x_plain)
    assert float(x_clipped.min()) < 0.1 and float(x_clipped.max()) > 0.9  # the full gray scale, not white


def _largest_step(heat: np.ndarray) -> float:
    return float(max(np.abs(np.diff(heat, axis=0)).max(), np.abs(np.diff(heat, axis=1)).max()))


# Full resolution (exports) and a display size: the fade covers the same share of the film, so
# its steps are larger in a smaller map (14 px there, 56 px on the full-size film).
@pytest.mark.parametrize(("max_side", "largest_step"), [(0, 0.03), (256, 0.11)])
def test_a_heat_map_fades_out_beyond_the_crop_box_instead_of_ending_in_a_rectangle(max_side, largest_step):
    """Issue 14: the heat map is not clipped to a hard rectangle at the lung-crop box edge."""
    from inference.preprocess import HEAT_TAPER

    geometry = Geometry(original_shape=(900, 1000), crop_box=(200, 150, 800, 850), size=224)
    hot_edges = np.ones((7, 7), np.float32)  # the hottest possible value right at every edge of the box
    hard = geometry.to_scaled(hot_edges, max_side)
    soft = geometry.to_scaled(hot_edges, max_side, taper=True)
    (h, w), (x0, y0, x1, y1) = geometry.scaled(max_side)
    assert hard.shape == soft.shape == (h, w)
    assert _largest_step(hard) == 1.0  # the rectangle the eye sees without the taper
    width = round(HEAT_TAPER * max(x1 - x0, y1 - y0))
    # A raised cosine over `width` pixels: no step larger than pi / (2 (width + 1)) of the edge value.
    assert _largest_step(soft) <= np.pi / (2 * (width + 1)) + 1e-6
    assert _largest_step(soft) < largest_step
    np.testing.assert_array_equal(soft[y0:y1, x0:x1], hard[y0:y1, x0:x1])  # inside the box: unchanged
    assert soft[y0 - 1, x0 + 5] > 0.98 and soft[y0 - width - 1, x0 + 5] == 0.0  # fades, then stops
    assert soft[: y0 - width].max() == 0.0 and soft[:, x1 + width :].max() == 0.0
    assert soft.max() <= 1.0 and soft.min() >= 0.0


def test_the_untapered_map_is_what_masks_and_measurements_use():
    geometry = Geometry(original_shape=(60, 80), crop_box=(10, 5, 70, 55), size=32)
    heat = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    exact = geometry.to_original(heat)
    assert not exact[:5].any() and not exact[:, :10].any()
    np.testing.assert_array_equal(geometry.to_scaled(heat), exact)
    tapered = geometry.to_original(heat, taper=True)
    np.testing.assert_array_equal(tapered[5:55, 10:70], exact[5:55, 10:70])
    assert tapered[4, 30] > 0.0 and tapered[4, 30] < exact[5, 30] + 1e-6


def test_a_box_covering_the_whole_image_has_nothing_to_taper():
    geometry = Geometry(original_shape=(40, 50), crop_box=(0, 0, 50, 40), size=32)
    heat = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    np.testing.assert_array_equal(geometry.to_original(heat, taper=True), geometry.to_original(heat))
