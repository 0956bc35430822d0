"""End-to-end training on tiny generated data: bundle, report, cancel, crash, fine-tuning."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from inference.bundle import BundleInfo, load_bundle, read_bundle_info  # noqa: E402
from inference.preprocess import PreprocessConfig  # noqa: E402
from tests.training_data import class_image, make_class_folder, write_csv, write_image  # noqa: E402
from training.evaluate import evaluate_bundle  # noqa: E402
from training.init import init_from_bundle, resolve_init  # noqa: E402
from training.progress import NullProgress, TrainingCancelled  # noqa: E402
from training.train import TrainConfig, TrainingError, train  # noqa: E402

CLASSES = ("COVID-19", "Normal", "Pneumonia")
SIZE = 32


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.stages: list[str] = []
        self.epochs: list[dict] = []
        self.batches = 0

    def on_stage(self, name: str, detail: str = "") -> None:
        self.stages.append(name)

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_batch_end(self, epoch: int, step: int, logs: dict) -> None:
        self.batches += 1

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.epochs.append(logs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generic CSV: 3 classes x 8 images, declared splits, two sources, a corrupt file and a
    training image copied into validation (a near-duplicate the run must report)."""
    root = tmp_path_factory.mktemp("csvdata")
    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(8):
            path = write_image(root / "img" / f"{cls}_{i}.png", class_image(ci, seed=100 * ci + i, size=48))
            split = "val" if i >= 6 else "train"
            rows.append((path.relative_to(root).as_posix(), cls, f"{cls}-p{i}", split, "site-a" if i % 2 else "site-b"))
    dup = write_image(root / "img" / "dup.png", class_image(0, seed=0, size=48))  # copy of COVID-19_0 (train)
    rows.append((dup.relative_to(root).as_posix(), "COVID-19", "dup-patient", "val", "site-a"))
    bad = root / "img" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    rows.append(("img/broken.png", "Normal", "bad-patient", "train", "site-a"))
    return write_csv(root / "labels.csv", ("path", "label", "patient_id", "split", "source"), rows)


@pytest.fixture(scope="module")
def trained(csv_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    progress = Recorder()
    config = TrainConfig(
        data=csv_data,
        out_dir=out,
        arch="custom-cnn",
        epochs=2,
        image_size=SIZE,
        batch_size=8,
        init="scratch",
        cache_dir=tmp_path_factory.mktemp("cache"),
        name="tiny-e2e",
        command="pytest",
    )
    return train(config, progress=progress), progress


@pytest.mark.slow
def test_training_writes_a_complete_loadable_bundle(trained) -> None:
    result, progress = trained
    model, info = load_bundle(result.bundle_dir)
    assert info.class_names == list(CLASSES)
    assert info.architecture == "custom-cnn" and info.gradcam_layer == "last_conv"
    assert info.preprocessing == PreprocessConfig(size=SIZE, channels=1)
    assert model.inputs[0].shape[1:] == (SIZE, SIZE, 1)
    t = info.training
    assert t["data"]["counts"]["train"] == {"COVID-19": 6, "Normal": 6, "Pneumonia": 6}
    assert t["data"]["counts"]["val"] == {"COVID-19": 3, "Normal": 2, "Pneumonia": 2}
    assert t["data"]["sources"]["site-a"]["val"] == 4
    assert t["data"]["skipped"] == 1 and t["epochs_run"] == 2 == len(result.history["loss"])
    assert t["command"] == "pytest" and t["config"]["arch"] == "custom-cnn"
    assert "CPU" in t["hardware"] or "GPU" in t["hardware"]
    val = info.metrics["val"]
    assert val["n_images"] == 7 and set(val["per_class"]) == set(CLASSES)
    assert set(val["by_source"]) == {"site-a", "site-b"}
    # Reported before training: the copied image, and the unreadable file.
    assert [(Path(d["path_a"]).name, Path(d["path_b"]).name) for d in result.duplicates] == [
        ("COVID-19_0.png", "dup.png")
    ]
    assert [Path(p).name for p, _ in result.skipped] == ["broken.png"]
    assert any("near-duplicate" in m for m in progress.messages)
    assert progress.stages.index("decoding") < progress.stages.index("training") < progress.stages.index("saving")
    assert len(progress.epochs) == 2 and {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(
        progress.epochs[0]
    )
    assert progress.batches == 2 * 3  # 18 training images in batches of 8
    report = result.bundle_dir / "report"
    for name in ("report.md", "report.json", "training_curves.png", "confusion_matrix_val.png", "roc_val.png"):
        assert (report / name).stat().st_size > 0, name
    assert "broken.png" in (report / "skipped.csv").read_text()
    assert "dup.png" in (report / "duplicates.csv").read_text()
    assert json.loads((report / "report.json").read_text())["metrics"]["val"]["n_images"] == 7


@pytest.mark.slow
def test_evaluate_reads_the_trained_bundle(trained, csv_data: Path) -> None:
    result, _ = trained
    report = evaluate_bundle(result.bundle_dir, csv_data, split="val", lungs=None)  # no chest films: no lung gate
    assert report["n_images"] == 7
    assert report["confusion_matrix"]["classes"] == list(CLASSES)
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 7
    assert {"accuracy", "macro_f1", "per_class", "ece", "by_source", "model", "skipped"} <= set(report)
    json.dumps(report, allow_nan=False)


@pytest.mark.slow
def test_cancel_leaves_the_existing_bundle_byte_identical(trained, csv_data: Path, tmp_path: Path) -> None:
    result, _ = trained
    out = tmp_path / "model"
    shutil.copytree(result.bundle_dir, out)
    before = _snapshot(out)
    cancel = threading.Event()

    class CancelAfterFirstBatch(Recorder):
        def on_batch_end(self, epoch: int, step: int, logs: dict) -> None:
            super().on_batch_end(epoch, step, logs)
            cancel.set()

    progress = CancelAfterFirstBatch()
    config = TrainConfig(
        data=csv_data,
        out_dir=out,
        arch="custom-cnn",
        epochs=3,
        image_size=SIZE,
        batch_size=8,
        init="scratch",
        overwrite=True,
    )
    with pytest.raises(TrainingCancelled):
        train(config, progress=progress, cancel=cancel)
    assert progress.batches == 1 and progress.epochs == []
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders left behind


@pytest.mark.slow
def test_a_crash_during_training_leaves_the_existing_bundle_intact(trained, csv_data: Path, tmp_path: Path) -> None:
    result, _ = trained
    out = tmp_path / "model"
    shutil.copytree(result.bundle_dir, out)
    before = _snapshot(out)

    class Crash(Recorder):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            raise RuntimeError("disk on fire")

    config = TrainConfig(
        data=csv_data,
        out_dir=out,
        arch="custom-cnn",
        epochs=2,
        image_size=SIZE,
        batch_size=8,
        init="scratch",
        overwrite=True,
    )
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(config, progress=Crash())
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_existing_output_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text("{}")
    progress = Recorder()
    with pytest.raises(TrainingError, match="already exists"):
        train(TrainConfig(data=tmp_path / "nowhere", out_dir=out), progress=progress)
    assert progress.stages == []
    with pytest.raises(TrainingError, match="Unknown architecture"):
        train(TrainConfig(data=tmp_path, out_dir=tmp_path / "x", arch="lenet"))


def test_bad_training_data_is_reported(tmp_path: Path) -> None:
    from training.datasets import DatasetError

    make_class_folder(tmp_path / "one", {"Normal": 6})
    with pytest.raises(DatasetError, match="Only one class"):
        train(TrainConfig(data=tmp_path / "one", out_dir=tmp_path / "m", init="scratch"))
    # Every image of a class unreadable: nothing left to learn that class from.
    make_class_folder(tmp_path / "bad", {"A": 5, "B": 5})
    for p in (tmp_path / "bad" / "B").iterdir():
        p.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DatasetError, match="No readable training images left for class"):
        train(TrainConfig(data=tmp_path / "bad", out_dir=tmp_path / "m", init="scratch", image_size=SIZE))
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------
# Initialisation


def _fake_bundle(folder: Path, arch: str = "custom-cnn", size: int = 64, clahe: bool = False) -> Path:
    folder.mkdir(parents=True)
    info = BundleInfo(
        name="fake",
        version="1",
        architecture=arch,
        class_names=list(CLASSES),
        preprocessing=PreprocessConfig(size=size, clahe=clahe),
        gradcam_layer="last_conv",
    )
    (folder / "model.json").write_text(json.dumps(info.to_dict()))
    (folder / "model.keras").write_bytes(b"not needed to plan")
    return folder


def test_resolve_init(tmp_path: Path) -> None:
    none = tmp_path / "no-bundled-model"
    plan = resolve_init("auto", None, None, None, bundled=none)
    assert (plan.kind, plan.arch, plan.size) == ("scratch", "custom-cnn", 224)
    assert "no bundled model" in plan.description
    bundled = _fake_bundle(tmp_path / "default", size=64, clahe=True)
    plan = resolve_init("auto", None, None, None, bundled=bundled)
    assert (plan.kind, plan.arch, plan.size, plan.preprocessing.clahe) == ("bundle", "custom-cnn", 64, True)
    assert plan.description.startswith("Fine-tuning the bundled model")
    plan = resolve_init("auto", "resnet50", None, None, bundled=bundled)
    assert plan.kind == "scratch" and "architecture custom-cnn, asked resnet50" in plan.description
    plan = resolve_init("auto", None, 128, None, bundled=bundled)
    assert plan.kind == "scratch" and "input 64 px" in plan.description
    assert resolve_init("scratch", None, None, None, bundled=bundled).kind == "scratch"
    assert resolve_init(str(bundled), None, 96, None).size == 96  # a bundle at another size: fine-tune anyway
    with pytest.raises(ValueError, match="not a model bundle"):
        resolve_init(str(tmp_path / "nothing"), None, None, None)
    with pytest.raises(ValueError, match="impossible"):
        resolve_init(str(bundled), "vgg16", None, None)
    with pytest.raises(ValueError, match="not found"):
        resolve_init("imagenet:" + str(tmp_path / "w.h5"), "resnet50", None, None)
    (tmp_path / "w.h5").write_bytes(b"")
    plan = resolve_init("imagenet:" + str(tmp_path / "w.h5"), "resnet50", 64, None)
    assert (plan.kind, plan.weights) == ("imagenet", tmp_path / "w.h5")


@pytest.mark.slow
def test_init_from_bundle_keeps_backbone_and_matches_head_by_class(trained) -> None:
    result, _ = trained
    old, _ = load_bundle(result.bundle_dir)
    x = np.random.default_rng(0).random((3, SIZE, SIZE, 1), dtype=np.float32)
    same, layer, summary = init_from_bundle(result.bundle_dir, list(CLASSES))
    assert layer == "last_conv" and "output layer kept" in summary
    np.testing.assert_allclose(same(x, training=False).numpy(), old(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    # New class order plus a new class: known columns are copied by name, the new one starts fresh.
    new, _, summary = init_from_bundle(result.bundle_dir, ["Pneumonia", "Tuberculosis", "COVID-19"])
    assert "new for 1" in summary
    k_old, b_old = old.get_layer("logits").get_weights()
    k_new, b_new = new.get_layer("logits").get_weights()
    np.testing.assert_array_equal(k_new[:, 0], k_old[:, 2])
    np.testing.assert_array_equal(k_new[:, 2], k_old[:, 0])
    np.testing.assert_array_equal(
        new.get_layer("block4b_conv").get_weights()[0], old.get_layer("block4b_conv").get_weights()[0]
    )


@pytest.mark.slow
def test_cli_fine_tunes_a_bundle_on_a_small_folder(trained, tmp_path: Path, capsys) -> None:
    from main import main

    result, _ = trained
    data = tmp_path / "mine"
    make_class_folder(data, {"COVID-19": 4, "Normal": 4}, size=40, seed=5)
    out = tmp_path / "finetuned"
    rc = main(
        [
            "train",
            str(data),
            "--out",
            str(out),
            "--init",
            str(result.bundle_dir),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--val-fraction",
            "0.25",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Fine-tuning" in captured.err and "Model written to" in captured.out
    assert "epoch 1/1: loss " in captured.err and "val_accuracy" in captured.err  # plain lines when not a terminal
    # Two validation images: the figure comes with its count, its interval and a warning (issue 17).
    assert "val: accuracy" in captured.out and "/2, 95% CI" in captured.out and "Only 2 images" in captured.out
    info = read_bundle_info(out)
    assert info.class_names == ["COVID-19", "Normal"] and info.input_size == SIZE
    assert "reused" in info.training["init"]
    # And without --overwrite the second run refuses, with exit code 1 and no traceback.
    rc = main(["train", str(data), "--out", str(out), "--epochs", "1"])
    captured = capsys.readouterr()
    assert rc == 1 and "already exists" in captured.err and "Traceback" not in captured.err


def test_console_progress_on_a_terminal_and_in_a_log() -> None:
    import io

    from training.progress import ConsoleProgress

    for bars in (False, True):
        stream = io.StringIO()
        p = ConsoleProgress(stream, bars=bars)
        p.on_stage("decoding", "1/2")
        p.on_stage("decoding", "2/2")
        p.on_train_begin(epochs=2, steps_per_epoch=2)
        for step in range(2):
            p.on_batch_end(0, step, {"loss": 0.5, "accuracy": 0.75})
        p.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.5, "lr": 0.001})
        p.on_message("done")
        text = stream.getvalue()
        assert "val_accuracy" in text and "0.75" in text and "done" in text
        if bars:
            assert "epoch 1/2" in text and "2/2" in text and "\r" in text
        else:
            assert text.splitlines()[0] == "[decoding] 2/2 done"
            assert "epoch 1/2: loss 0.5 accuracy 0.75 val_loss 0.6 val_accuracy 0.5 lr 0.001" in text


@pytest.mark.slow
def test_leave_source_out_and_lung_crop_reach_the_bundle(csv_data: Path, tmp_path: Path) -> None:
    """--val-sources keeps a whole source out of training; --crop lungs is stored in the bundle
    and a Predictor of that bundle crops the same way (the whole image when no lungs are found)."""
    from inference.loading import load_image
    from inference.predictor import Predictor
    from tests.tiny_bundle import xray_from_array

    progress = Recorder()
    config = TrainConfig(
        data=csv_data,
        out_dir=tmp_path / "lso",
        arch="custom-cnn",
        epochs=1,
        image_size=SIZE,
        batch_size=8,
        init="scratch",
        val_sources=("site-a",),
        crop="lungs",
        crop_margin=0.1,
    )
    result = train(config, progress=progress)
    info = read_bundle_info(result.bundle_dir)
    assert info.preprocessing.crop == "lungs" and info.preprocessing.crop_margin == 0.1
    sources = info.training["data"]["sources"]
    assert "train" not in sources["site-a"] and sources["site-a"]["val"] > 0
    assert sources["site-b"]["train"] > 0
    assert info.training["config"]["val_sources"] == ["site-a"]
    assert any("Leave-source-out" in m for m in progress.messages)
    # only the films the weights were fitted on count as "trained on" for a later adaptation
    from inference.sidecar import file_sha256

    hashed = set((result.bundle_dir / "training_hashes.txt").read_text().split())
    rows = [r for r in csv.DictReader(csv_data.open()) if r["path"] != "img/broken.png"]
    by_source = {
        src: {file_sha256(csv_data.parent / r["path"]) for r in rows if r["source"] == src}
        for src in ("site-a", "site-b")
    }
    held_out = by_source["site-a"] - by_source["site-b"]  # dup.png is a byte copy of a site-b film
    assert held_out and not (held_out & hashed)
    assert len(hashed) == sum(sources[s].get("train", 0) for s in sources)
    predictor = Predictor(result.bundle_dir)
    image = load_image(next(csv_data.parent.glob("img/Normal_1.png")))
    lungs = predictor.lungs.segment(image, 0.1)
    prediction = predictor.predict(image)
    assert prediction.geometry.crop_box == (lungs.box if lungs.plausible else (0, 0, 48, 48))
    blank = xray_from_array(np.full((64, 64), 128, np.uint8))
    prediction, explanation = predictor.predict_and_explain(blank)
    assert prediction.lung_warning and "No plausible lung fields" in prediction.lung_warning
    assert prediction.geometry.crop_box == (0, 0, 64, 64)  # no lungs: nothing is cut away
    assert explanation.lung_heat_fraction is None and explanation.lung_warning == prediction.lung_warning
    with pytest.raises(Exception, match="needs the lung model"):
        Predictor(result.bundle_dir, lungs=None)
    from training.samples import DatasetError

    with pytest.raises(DatasetError, match="no images from site-c"):
        train(TrainConfig(data=csv_data, out_dir=tmp_path / "x", init="scratch", val_sources=("site-c",)))
