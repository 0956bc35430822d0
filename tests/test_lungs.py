"""Lung fields (issue 7): the shipped model, crop geometry, heat inside the lungs, training."""

from __future__ import annotations

import csv
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.image import ImageMeta, XRayImage  # noqa: E402
from inference.loading import load_image  # noqa: E402
from inference.lungs import (  # noqa: E402
    NO_LUNGS_WARNING,
    LungModelError,
    check_plausible,
    default_lung_model_dir,
    heat_fraction_in_lungs,
    lung_box,
    read_lung_card,
)
from inference.paths import sample_files, samples_dir  # noqa: E402
from inference.preprocess import PreprocessConfig, preprocess  # noqa: E402

SHARED_LUNGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "lungs"


def gray_image(pixels: np.ndarray) -> XRayImage:
    h, w = pixels.shape
    return XRayImage(pixels=pixels, meta=ImageMeta(path="mem", format="PNG", width=w, height=h, bits_stored=8))


def two_lungs(h: int = 120, w: int = 100, merged: bool = False) -> np.ndarray:
    """A mask with two upright elliptic lung fields (or one wide blob when ``merged``)."""
    m = np.zeros((h, w), np.uint8)
    if merged:
        cv2.ellipse(m, (w // 2, h // 2), (int(w * 0.35), int(h * 0.3)), 0, 0, 360, 1, -1)
    else:
        for cx in (int(w * 0.3), int(w * 0.7)):
            cv2.ellipse(m, (cx, int(h * 0.45)), (int(w * 0.14), int(h * 0.28)), 0, 0, 360, 1, -1)
    return m.astype(bool)


# ---------------------------------------------------------------------------------------------
# Pure geometry and maths


def test_lung_box_without_margin_is_the_tight_box():
    m = np.zeros((50, 40), bool)
    m[10:20, 5:30] = True
    assert lung_box(m, 0.0) == (5, 10, 30, 20)


def test_lung_box_margin_grows_each_side_by_a_fraction_of_the_box():
    m = np.zeros((200, 200), bool)
    m[50:150, 40:140] = True  # 100 x 100
    assert lung_box(m, 0.1) == (30, 40, 150, 160)


def test_lung_box_is_clipped_and_an_empty_mask_gives_the_whole_image():
    m = np.zeros((60, 80), bool)
    m[0:30, 70:80] = True
    x0, y0, x1, y1 = lung_box(m, 0.5)
    assert (y0, x1) == (0, 80) and x0 == 65 and y1 == 45
    assert lung_box(np.zeros((60, 80), bool), 0.08) == (0, 0, 80, 60)
    with pytest.raises(ValueError):
        lung_box(np.zeros((2, 3, 4), bool), 0.1)


def test_heat_fraction_in_lungs():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    inside = np.zeros((10, 10), np.float32)
    inside[2:4, 1:3] = 0.7
    outside = np.zeros((10, 10), np.float32)
    outside[5:8, 6:9] = 1.0
    assert heat_fraction_in_lungs(inside, mask) == pytest.approx(1.0)
    assert heat_fraction_in_lungs(outside, mask) == pytest.approx(0.0)
    assert heat_fraction_in_lungs(np.zeros((10, 10)), mask) == 0.0
    assert heat_fraction_in_lungs(inside + outside, mask) == pytest.approx(0.7 * 4 / (0.7 * 4 + 9))
    uniform = np.ones((10, 10))
    assert heat_fraction_in_lungs(uniform, mask) == pytest.approx(0.5)
    broken = uniform.copy()
    broken[0, 0] = np.nan
    assert np.isfinite(heat_fraction_in_lungs(broken, mask))
    with pytest.raises(ValueError):
        heat_fraction_in_lungs(np.ones((5, 5)), mask)


def test_plausibility_checks():
    assert check_plausible(two_lungs()) == (True, None)
    assert check_plausible(two_lungs(merged=True))[0]
    right_only = two_lungs()
    right_only[:, 50:] = False
    left_shifted = np.zeros((120, 100), bool)
    left_shifted[:, :75] = two_lungs()[:, 25:]  # both fields left of the midline
    blob = np.zeros((120, 100), bool)
    blob[50:60, 45:55] = True
    huge = np.ones((120, 100), bool)
    scattered = two_lungs()
    scattered[::2, ::2] = True
    for bad in (np.zeros((120, 100), bool), right_only, left_shifted, blob, huge, scattered):
        ok, warning = check_plausible(bad)
        assert not ok and warning.startswith(NO_LUNGS_WARNING)
    unsure = np.where(two_lungs(), 0.55, 0.45).astype(np.float32)
    assert not check_plausible(two_lungs(), unsure)[0]
    sure = np.where(two_lungs(), 0.98, 0.02).astype(np.float32)
    assert check_plausible(two_lungs(), sure)[0]


def test_heat_map_on_a_lung_crop_maps_back_onto_the_original_image():
    h, w = 300, 240
    pixels = np.full((h, w), 40, np.uint8)
    mask = two_lungs(h, w)
    box = lung_box(mask, 0.08)
    x0, y0, x1, y1 = box
    assert (x0, y0, x1, y1) != (0, 0, w, h)
    spot = (y0 + 37, x0 + 61)  # a bright dot at a known original position inside the box
    pixels[spot[0] - 1 : spot[0] + 2, spot[1] - 1 : spot[1] + 2] = 255
    config = PreprocessConfig(size=64, crop="lungs", crop_margin=0.08)
    x, geometry = preprocess(gray_image(pixels), config, crop_box=box)
    assert geometry.crop_box == box and geometry.original_shape == (h, w)
    # The model input shows the dot where the crop puts it ...
    v, u = np.unravel_index(np.argmax(x[..., 0]), x.shape[:2])
    assert abs((u + 0.5) * (x1 - x0) / 64 + x0 - spot[1]) <= 3
    assert abs((v + 0.5) * (y1 - y0) / 64 + y0 - spot[0]) <= 3
    # ... and a heat map blob placed on it comes back on the dot in the original image.
    heat = np.zeros((64, 64), np.float32)
    heat[v, u] = 1.0
    heat = cv2.GaussianBlur(heat, (0, 0), 1.5)
    back = geometry.to_original(heat)
    assert back.shape == (h, w)
    by, bx = np.unravel_index(np.argmax(back), back.shape)
    assert abs(by - spot[0]) <= 3 and abs(bx - spot[1]) <= 3
    assert back[:y0].max() == 0 and back[:, x1:].max() == 0  # nothing outside the crop
    assert heat_fraction_in_lungs(back, lung_box_mask(box, (h, w))) == pytest.approx(1.0)


def lung_box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_missing_or_foreign_lung_model_is_refused(tmp_path: Path):
    with pytest.raises(LungModelError):
        read_lung_card(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"x")
    (tmp_path / "model.json").write_text('{"format": "cxr-model-bundle"}')
    with pytest.raises(LungModelError, match="does not describe a lung model"):
        read_lung_card(tmp_path)


# ---------------------------------------------------------------------------------------------
# The shipped model


@pytest.fixture(scope="module")
def segmenter():
    from inference.lungs import LungSegmenter

    return LungSegmenter()


def test_shipped_card_reports_dice_per_source_and_licence():
    card = read_lung_card(default_lung_model_dir())
    assert card.outputs == ["visible", "whole"] and card.primary == "visible"
    dice = card.metrics["dice_test"]
    assert {"nlm_montgomery", "nlm_shenzhen", "gb_covid_seg", "v7_ieee8023", "v7_kermany"} <= set(dice)
    assert all(d["n"] > 0 and 0.0 <= d["dice_mean"] <= 1.0 for d in dice.values())
    assert card.training["command"].startswith("python -m training.lungs")
    assert "CC BY-NC-SA 4.0" in card.license["terms"]
    assert "CC BY-NC-SA 4.0" in (default_lung_model_dir() / "NOTICE").read_text(encoding="utf-8")
    assert (default_lung_model_dir() / "model.keras").stat().st_size < 5 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_shipped_model_finds_the_lungs_of_every_sample(segmenter, path: Path):
    image = load_image(path)
    result = segmenter.segment(image)
    assert result.mask.shape == image.shape and result.mask.dtype == bool
    assert result.whole_mask is not None and result.whole_mask.shape == image.shape
    assert 0.10 <= result.area_fraction <= 0.60
    assert result.plausible and result.warning is None
    x0, y0, x1, y1 = result.box
    assert (x0, y0, x1, y1) != (0, 0, image.shape[1], image.shape[0])
    ys, xs = np.nonzero(result.mask)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    # The two lungs are on both sides of the midline, the right lung (image left) a field of its own.
    h, w = image.shape
    assert result.mask[:, : w // 2].sum() > 0.25 * result.mask.sum()
    assert result.mask[:, w // 2 :].sum() > 0.25 * result.mask.sum()
    assert segmenter.segment(image) is result  # cached: crop box and heat fraction cost one pass
    assert segmenter.crop_box(image) == result.box


@pytest.mark.slow
def test_non_chest_images_get_the_warning(segmenter):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    y, x = np.mgrid[0:256, 0:300]
    gradient = (x * 255 / 299).astype(np.uint8)
    text_page = np.full((300, 220), 245, np.uint8)
    for row in range(20, 280, 14):
        text_page[row : row + 6, 15 : 15 + int(rng.integers(100, 190))] = 30
    for pixels in (noise, gradient, text_page):
        image = gray_image(pixels)
        result = segmenter.segment(image)
        assert not result.plausible
        assert result.warning.startswith(NO_LUNGS_WARNING)
        assert result.box == (0, 0, pixels.shape[1], pixels.shape[0])
        assert segmenter.crop_box(image) is None


@pytest.mark.slow
def test_shipped_model_crop_round_trip_on_a_sample(segmenter):
    path = samples_dir() / "covid19_ieee8023_00870a9c.jpg"
    image = load_image(path)
    result = segmenter.segment(image, margin=0.08)
    config = PreprocessConfig(size=64, crop="lungs", crop_margin=0.08)
    x, geometry = preprocess(image, config, crop_box=result.box)
    assert geometry.crop_box == result.box
    heat = np.zeros((64, 64), np.float32)
    heat[16:48, 8:24] = 1.0  # over the image's left half of the crop, where a lung is
    back = geometry.to_original(heat)
    assert heat_fraction_in_lungs(back, result.mask) > 0.5
    assert heat_fraction_in_lungs(result.mask.astype(np.float32), result.mask) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Training


def test_loss_ignores_the_output_a_mask_does_not_annotate():
    from training.lungs import lung_loss, targets

    rng = np.random.default_rng(1)
    masks = (rng.random((2, 8, 8)) > 0.5).astype(np.float32)
    y = targets(masks, ["visible", "whole"])
    assert (y[0, ..., 1] == -1).all() and (y[1, ..., 0] == -1).all()
    pred = rng.uniform(0.05, 0.95, (2, 8, 8, 2)).astype(np.float32)
    other = pred.copy()
    other[0, ..., 1] = 0.01  # change only what no mask annotates
    other[1, ..., 0] = 0.99
    a, b = float(lung_loss(y, pred)), float(lung_loss(y, other))
    assert a == pytest.approx(b, rel=1e-5)
    perfect = np.where(y < 0, 0.5, np.clip(y, 0.001, 0.999)).astype(np.float32)
    assert float(lung_loss(y, perfect)) < a


def test_augmentation_moves_image_and_mask_together():
    from training.lungs import LungAugment, augment_pair, dice

    mask = (two_lungs(64, 64) * 255).astype(np.uint8)
    image = mask.copy()
    geometric = LungAugment(brightness=0, contrast=0, gamma=0, noise=0, blur_probability=0)
    rng = np.random.default_rng(3)
    for _ in range(5):
        img, msk = augment_pair(image, mask, rng, geometric)
        assert img.dtype == np.float32 and msk.dtype == np.float32
        assert dice(img > 0.5, msk > 0.5) > 0.97
    img, msk = augment_pair(image, mask, rng)  # with intensity changes too
    assert img.min() >= 0.0 and img.max() <= 1.0


def write_ellipse_set(root: Path, n: int = 12) -> Path:
    """A tiny lung data set with the shared data's layout: two sources, two conventions."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        source, conv = (
            ("nlm_fake", "left+right lung fields, heart/mediastinum excluded")
            if i % 2
            else (
                "v7_fake",
                "whole lungs incl. retrocardiac region behind heart",
            )
        )
        h, w = 40 + int(rng.integers(0, 8)), 36 + int(rng.integers(0, 8))
        mask = two_lungs(h, w).astype(np.uint8) * 255
        image = np.where(mask > 0, 60, 190).astype(np.uint8) + rng.integers(0, 20, (h, w), dtype=np.uint8)
        for kind, arr, ext in (("images", image, "jpg"), ("masks", mask, "png")):
            (root / source / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / source / kind / f"f{i:02d}.{ext}"), arr)
        rows.append(
            {
                "image": f"{source}/images/f{i:02d}.jpg",
                "mask": f"{source}/masks/f{i:02d}.png",
                "id": f"{source}-f{i:02d}",
                "source": source,
                "mask_convention": conv,
                "source_image_path": f"img/person{i // 2}_x_{i}.png",
                "license": "CC BY 4.0",
            }
        )
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_split_keeps_patients_together_and_holds_out_forced_images(tmp_path: Path):
    from training.lungs import read_manifest, split_pairs

    pairs = read_manifest(write_ellipse_set(tmp_path / "data", n=24))
    assert {p.convention for p in pairs} == {"visible", "whole"}
    splits = split_pairs(pairs, val_fraction=0.2, test_fraction=0.2, seed=0, force_test=["person3_x_7"])
    where: dict[str, set[str]] = {}
    for name, items in splits.items():
        for p in items:
            where.setdefault(p.group, set()).add(name)
    assert all(len(s) == 1 for s in where.values())  # person<k> has two films, in one split
    assert where["person3"] == {"test"}
    assert splits["train"] and splits["val"] and splits["test"]


@pytest.mark.slow
def test_training_smoke_writes_a_loadable_model(tmp_path: Path):
    from inference.lungs import LungSegmenter
    from training.lungs import LungTrainConfig, train_lungs

    data = write_ellipse_set(tmp_path / "data")
    out = tmp_path / "lungs"
    config = LungTrainConfig(
        data=str(data),
        out=str(out),
        size=32,
        base_filters=4,
        depth=2,
        epochs=1,
        batch_size=4,
        val_fraction=0.2,
        test_fraction=0.2,
        cache=str(tmp_path / "cache"),
        command="python -m training.lungs test",
    )
    result = train_lungs(config)
    card = read_lung_card(out)
    assert card.input_size == 32 and card.outputs == ["visible", "whole"]
    assert set(card.metrics["dice_test"]) <= {"nlm_fake", "v7_fake"} and card.metrics["dice_test"]
    assert "NOTICE" in {p.name for p in out.iterdir()}
    seg = LungSegmenter(out)  # safe_mode load of what training wrote
    image = load_image(data / "nlm_fake" / "images" / "f01.jpg")
    r = seg.segment(image)
    assert r.mask.shape == image.shape and 0.0 <= r.area_fraction <= 1.0
    assert result["card"]["training"]["epochs_run"] == 1


@pytest.mark.skipif(not (SHARED_LUNGS / "manifest.csv").is_file(), reason="shared lung data not present")
def test_real_manifest_conventions_and_leak_free_split():
    from training.lungs import read_manifest, split_pairs

    pairs = read_manifest(SHARED_LUNGS)
    conv = {p.source: p.convention for p in pairs}
    assert conv["nlm_shenzhen"] == conv["nlm_montgomery"] == conv["gb_covid_seg"] == "visible"
    assert conv["v7_ieee8023"] == conv["v7_kermany"] == "whole"
    splits = split_pairs(pairs, force_test=["00870a9c"])
    seen: dict[str, str] = {}
    for name, items in splits.items():
        for p in items:
            assert seen.setdefault(p.group, name) == name
    assert "v7ieee-00870a9c" in {p.id for p in splits["test"]}
    assert all(p.image.is_file() and p.mask.is_file() for p in pairs[:5])


LATERAL_DICOM = SHARED_LUNGS.parent / "dicom" / "15_vet_highdicom_DX_thorax-lateral_MONO1_8bit_ExplicitLE.dcm"


@pytest.mark.slow
@pytest.mark.skipif(not LATERAL_DICOM.is_file(), reason="shared DICOM samples not present")
def test_a_lateral_thorax_is_not_taken_for_frontal_lungs(segmenter):
    result = segmenter.segment(load_image(LATERAL_DICOM))
    assert not result.plausible and result.warning.startswith(NO_LUNGS_WARNING)


@pytest.mark.slow
def test_batched_lungs_in_predict_paths_equal_one_image_at_a_time(tmp_path):
    """predict_paths segments a chunk's lungs in one pass: the crop boxes, warnings and
    probabilities must be those of predicting each file alone (the bundled model crops)."""
    import cv2

    from inference.paths import bundled_model_dir
    from inference.predictor import Predictor

    predictor = Predictor(bundled_model_dir())
    assert predictor.info.preprocessing.crop == "lungs"
    noise = tmp_path / "noise.png"  # no lungs in it: whole image, with the warning
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (200, 180), dtype=np.uint8))
    paths = [*sample_files()[:4], noise]
    results = list(predictor.predict_paths(paths, batch_size=3, explain=True))
    assert [r.file for r in results] == [str(p) for p in paths] and all(r.ok for r in results)
    for r in results:
        image = load_image(r.file)  # a fresh pixel array: no lungs cached for it
        prediction, explanation = predictor.predict_and_explain(image)
        assert r.prediction.geometry.crop_box == prediction.geometry.crop_box
        assert r.prediction.lung_warning == prediction.lung_warning
        np.testing.assert_allclose(r.prediction.probs, prediction.probs, atol=1e-4)
        if explanation.lung_heat_fraction is None:
            assert r.explanation.lung_heat_fraction is None
        else:
            assert r.explanation.lung_heat_fraction == pytest.approx(explanation.lung_heat_fraction, abs=1e-4)
    assert results[-1].prediction.lung_warning and results[-1].prediction.geometry.crop_box == (0, 0, 180, 200)


# ---------------------------------------------------------------------------------------------
# Lung training on the classifier's training stack (issue 12)


class _Recorder:
    """A TrainingProgress that keeps what it is told, and can cancel after the first batch."""

    def __init__(self, cancel=None):
        self.cancel, self.stages, self.epochs, self.batches = cancel, [], [], 0

    def on_stage(self, name, detail=""):
        self.stages.append(name)

    def on_train_begin(self, epochs, steps_per_epoch):
        pass

    def on_batch_end(self, epoch, step, logs):
        self.batches += 1
        if self.cancel is not None:
            self.cancel.set()

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(dict(logs))

    def on_message(self, text):
        pass


def _tiny_lung_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train-lungs", "--data", str(data), "--out", str(out), "--size", "32", "--base-filters", "4",
        "--depth", "2", "--batch-size", "4", "--cache", str(cache), "--force-test", *extra,
    ]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_lung_training_cli_conventions(tmp_path: Path, capsys):
    import main

    data = write_ellipse_set(tmp_path / "data")
    out, cache = tmp_path / "lungs", tmp_path / "cache"
    assert main.main([*_tiny_lung_args(data, out, cache), "--epochs", "1"]) == 0
    assert "Lung model written to" in capsys.readouterr().out
    before = _snapshot(out)
    assert {"model.keras", "model.json", "README.md", "NOTICE"} <= set(before)
    # An existing model is refused before any work, without --overwrite; exit 1, no traceback.
    rc = main.main([*_tiny_lung_args(data, out, cache), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert _snapshot(out) == before
    # Bad settings are one line too.
    assert main.main([*_tiny_lung_args(data, tmp_path / "other", cache), "--epochs", "0"]) == 1
    assert main.main(["train-lungs", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert "manifest.csv" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "lungs"]


@pytest.mark.slow
def test_lung_training_cancel_leaves_the_existing_model_untouched(tmp_path: Path):
    import threading

    from training.lungs import LungTrainConfig, train_lungs
    from training.progress import TrainingCancelled

    data = write_ellipse_set(tmp_path / "data")
    out = tmp_path / "lungs"
    out.mkdir()
    (out / "model.json").write_text('{"working": true}')
    (out / "model.keras").write_bytes(b"the working model")
    before = _snapshot(out)
    cancel = threading.Event()
    config = LungTrainConfig(
        data=str(data), out=str(out), size=32, base_filters=4, depth=2, epochs=3, batch_size=4, overwrite=True
    )
    recorder = _Recorder(cancel)
    with pytest.raises(TrainingCancelled):
        train_lungs(config, progress=recorder, cancel=cancel)
    assert recorder.batches == 1 and "saving" not in recorder.stages
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "lungs"]  # no temporary folder left


@pytest.mark.slow
def test_lung_training_reports_progress_and_keeps_the_best_epoch(tmp_path: Path):
    from training.lungs import LungTrainConfig, train_lungs

    data = write_ellipse_set(tmp_path / "data", n=16)
    config = LungTrainConfig(
        data=str(data),
        out=str(tmp_path / "lungs"),
        size=32,
        base_filters=4,
        depth=2,
        epochs=6,
        batch_size=4,
        patience=2,
        learning_rate=3e-3,  # on this set: Dice peaks at epoch 1 and falls, so early stopping must restore
        val_fraction=0.25,
        test_fraction=0.2,
    )
    recorder = _Recorder()
    result = train_lungs(config, progress=recorder)
    training = result["card"]["training"]
    dices = [h["val_dice"] for h in training["history"]]
    assert len(recorder.epochs) == training["epochs_run"] == len(dices) >= 1
    assert all("val_dice" in logs and "loss" in logs for logs in recorder.epochs)
    assert dices == [round(logs["val_dice"], 4) for logs in recorder.epochs]
    assert training["best_epoch"] == 1 + int(np.argmax(dices))  # the best epoch's weights are the ones saved
    assert training["stopped_early"] == (training["epochs_run"] < config.epochs)
    assert recorder.stages[:1] == ["scanning"] and recorder.stages[-1] == "saving"
    # The saved network is the best epoch's, not the last one's: its validation Dice is the best one.
    from inference.lungs import LungSegmenter
    from training.lungs import _dice_at_model_grid, load_pair_arrays, read_manifest, split_pairs

    splits = split_pairs(read_manifest(data), config.val_fraction, config.test_fraction, config.seed)
    xv, yv, kv = load_pair_arrays(splits["val"], config.size)
    saved = LungSegmenter(tmp_path / "lungs").model
    assert round(_dice_at_model_grid(saved, xv, yv, [p.convention for p in kv]), 4) == max(dices)


@pytest.mark.slow
def test_ctrl_c_in_lung_training_exits_130_and_keeps_the_model(tmp_path: Path):
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    data = write_ellipse_set(tmp_path / "data")
    out = tmp_path / "lungs"
    out.mkdir()
    (out / "model.json").write_text('{"working": true}')
    before = _snapshot(out)
    args = _tiny_lung_args(data, out, tmp_path / "cache", "--epochs", "500", "--patience", "500", "--overwrite")
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.lungs", *args[1:]],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in proc.stderr:  # ConsoleProgress writes plain lines when not on a terminal
            lines.append(line)
            if line.startswith("epoch 1/"):
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines)[-2000:] + rest[-2000:]
    assert "Training cancelled" in rest and "Traceback" not in rest
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "lungs"]
