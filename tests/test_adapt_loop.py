"""The whole adaptation loop on tiny generated data: CLI, gate, lineage, de-duplication, cancel."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from inference.sidecar import Sidecar, SidecarStore
from inference.verdict import Verdict
from tests.tiny_bundle import make_tiny_bundle
from tests.training_data import make_class_folder

CLASSES = ("COVID-19", "Normal", "Pneumonia")


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Untrained: a flattened random-conv feature map keeps where the blob is, so only the
    # classification layer has to learn it; the parent itself guesses.
    return make_tiny_bundle(tmp_path_factory.mktemp("models") / "parent", head="flatten", version="1.1.1")


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("films")
    make_class_folder(root, dict.fromkeys(CLASSES, 40), size=48)
    return root


def _main(*argv: str) -> int:
    from main import main

    return main(list(argv))


def test_adapt_cli_writes_a_new_version_with_lineage_and_card(parent: Path, films: Path, tmp_path: Path) -> None:
    before = _tree_digest(parent)
    out, report = tmp_path / "child", tmp_path / "report.json"
    rc = _main("adapt", str(films), "--init", str(parent), "--out", str(out), "--json", str(report))
    assert rc == 0
    data = json.loads((out / "model.json").read_text())
    assert data["version"] == "1.1.1-adapted.1" and data["name"] == "tiny-test"
    lineage = data["training"]["adaptation"]
    assert lineage["parent"]["version"] == "1.1.1" and lineage["parent"]["content_hash"].startswith("sha256:")
    assert lineage["local_films"] == 120 and lineage["check_films"] >= 24
    assert lineage["gate"]["accepted"] and lineage["gate"]["figures"]["check"]["ci95"][0] > 0
    assert lineage["counts"]["in_parent_training_data"] == "not checked"  # an old bundle carries no hashes
    check = lineage["comparison"]["check"]
    assert check["child"]["balanced_accuracy"] > check["parent"]["balanced_accuracy"] + 0.2
    assert "Parent's temperature" in lineage["calibration"]  # too few local films to refit it
    card = (out / "README.md").read_text()
    assert "Fine-tuned from: tiny-test 1.1.1" in card and "Confusion matrix, adapted" in card
    assert len((out / "training_hashes.txt").read_text().split()) >= 90  # fine-tune films, for the next round
    assert json.loads(report.read_text())["accepted"] is True
    assert _tree_digest(parent) == before  # the parent is never written to
    # An adapted model is loaded like any other, and its results name its exact version.
    import csv

    film = next(films.rglob("*.png"))
    table = tmp_path / "predictions.csv"
    assert _main("predict", str(film), "--model", str(out), "--csv", str(table)) == 0
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert rows[0]["model_name"] == "tiny-test" and rows[0]["model_version"] == "1.1.1-adapted.1"


def test_refused_gate_exits_3_and_writes_nothing(parent: Path, tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    make_class_folder(noise, dict.fromkeys(CLASSES, 15), size=48)
    # Shuffle labels across class folders: nothing can be learnt, no gain beyond the noise.
    rng = np.random.default_rng(0)
    files = sorted(noise.rglob("*.png"))
    for i, f in enumerate(files):
        f.rename(f.with_name(f"x{i}.png"))
    files = sorted(noise.rglob("*.png"))
    tmp_names = [f.with_name(f"y{i}.png") for i, f in enumerate(files)]
    for f, t in zip(files, tmp_names, strict=True):
        f.rename(t)
    targets = [noise / CLASSES[int(c)] for c in rng.integers(0, 3, len(tmp_names))]
    for i, (f, folder) in enumerate(zip(tmp_names, targets, strict=True)):
        f.rename(folder / f"z{i}.png")
    out, report = tmp_path / "child", tmp_path / "r.json"
    rc = _main("adapt", str(noise), "--init", str(parent), "--out", str(out), "--json", str(report))
    assert rc == 3
    assert not out.exists()
    got = json.loads(report.read_text())
    assert got["accepted"] is False and "not better beyond its uncertainty" in got["reasons"][0]


def test_reads_and_parent_training_hashes(parent: Path, films: Path, tmp_path: Path) -> None:
    from training.adapt import AdaptConfig, adapt

    # A parent that carries the hashes of 10 of the local films: they are left out.
    hashed = tmp_path / "hashed"
    import shutil

    shutil.copytree(parent, hashed)
    desc = json.loads((hashed / "model.json").read_text())
    desc["training"] = {"data": {"content_hashes": {"file": "training_hashes.txt"}}}
    (hashed / "model.json").write_text(json.dumps(desc))
    seen = sorted(films.rglob("*.png"))[:10]
    (hashed / "training_hashes.txt").write_text(
        "".join(hashlib.sha256(p.read_bytes()).hexdigest() + "\n" for p in seen)
    )
    store = SidecarStore(tmp_path / "reads")
    for i, p in enumerate(sorted(films.rglob("*.png"))):
        reader = p.parent.name if i % 10 else "Other finding"  # every tenth: not one of the model's classes
        ai = "Normal"
        key = "sha256-" + hashlib.sha256(p.read_bytes()).hexdigest()
        store.save(Sidecar(key, file=str(p), verdict=Verdict().with_class(reader, ai, reader="Dr A")))
    result = adapt(AdaptConfig(parent=hashed, out_dir=None, reads_dir=store.root))
    counts = result.report["lineage"]["counts"]
    assert counts["from_reads"] == 108 and counts["excluded_not_a_model_class"] == 12
    assert 0 < counts["in_parent_training_data"] <= 10
    assert result.bundle_dir is None  # out_dir None: figures only


def test_cancel_writes_no_model(parent: Path, films: Path, tmp_path: Path) -> None:
    from training.adapt import AdaptConfig, adapt
    from training.progress import TrainingCancelled

    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "child"
    with pytest.raises(TrainingCancelled):
        adapt(AdaptConfig(parent=parent, out_dir=out, data=films), cancel=cancel)
    assert not out.exists()


def test_bad_input_is_a_clear_error(parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("adapt", "--init", str(parent)) == 1
    assert "nothing to adapt to" in capsys.readouterr().err
    assert _main("adapt", str(tmp_path), "--init", str(parent), "--out", str(parent)) == 1


def test_adapted_version_counts_up() -> None:
    from training.adapt import adapted_version

    assert adapted_version("1.1.1") == "1.1.1-adapted.1"
    assert adapted_version("1.1.1-adapted.1") == "1.1.1-adapted.2"


def test_trained_bundles_carry_their_images_hashes_and_adapt_leaves_those_films_out(tmp_path: Path) -> None:
    from inference.model_folder import read_content_hashes, read_description
    from training.adapt import AdaptConfig, adapt
    from training.train import TrainConfig, train

    seen = tmp_path / "seen"
    make_class_folder(seen, dict.fromkeys(CLASSES, 6), size=32, seed=1)
    result = train(
        TrainConfig(
            data=seen,
            out_dir=tmp_path / "m",
            arch="custom-cnn",
            init="scratch",
            image_size=32,
            epochs=1,
            calibrate=False,
        )
    )
    from inference.bundle import read_bundle_info
    from training.datasets import discover_as_trained
    from training.ood_fit import recreate_split

    hashes = read_content_hashes(result.bundle_dir, read_description(result.bundle_dir))
    training = read_bundle_info(result.bundle_dir).training
    split = recreate_split(discover_as_trained(seen, training["config"]).samples, training)
    # the films its weights were fitted on; its validation films are not "trained on"
    assert hashes == {hashlib.sha256(s.path.read_bytes()).hexdigest() for s in split["train"]}
    assert split["val"] and len(hashes) == len(split["train"]) < 18
    local = tmp_path / "local"
    make_class_folder(local, dict.fromkeys(CLASSES, 6), size=32, seed=2)
    for p in [s.path for s in split["train"]][:5]:  # five films the model was trained on come back as local films
        (local / p.parent.name / f"again_{p.name}").write_bytes(p.read_bytes())
    report = adapt(AdaptConfig(parent=result.bundle_dir, out_dir=None, data=local)).report
    assert report["lineage"]["counts"]["in_parent_training_data"] == 5
    # Its training data is still where it was: forgetting is checked on its own validation images.
    assert report["lineage"]["reference"].startswith("the parent's own validation images")
    assert "reference" in report["lineage"]["comparison"] and "Reference set" in report["reasons"][1]
    assert report["lineage"]["local_films"] == 18


def test_rehearsal_draws_the_parents_class_gaussians_and_holds_its_decisions() -> None:
    from inference.ood import FeatureGaussians
    from training.adapt import fit_head, replay_features

    means = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    scorer = FeatureGaussians(means, np.linalg.inv(cov), 10.0, 0.99)
    x, y = replay_features(scorer, 4000, seed=1)
    assert np.bincount(y).tolist() == [4000] * 3
    for c in range(3):
        assert np.allclose(x[y == c].mean(axis=0), means[c], atol=0.1)
    assert np.allclose(np.cov((x[y == 0] - means[0]).T), cov, atol=0.1)
    # The parent separates the classes; local films say "class 1" for everything near class 0's mean.
    w0, b0 = means.T.astype(np.float32), np.zeros(3, np.float32)
    local = means[0] + np.random.default_rng(2).normal(0, 0.3, (40, 2))
    labels = np.ones(40, np.int64)
    args = dict(steps=300, learning_rate=0.05, anchor=0.0)
    w, b, _ = fit_head(local, labels, np.ones(40), w0, b0, None, **args)
    wr, br, _ = fit_head(local, labels, np.ones(40), w0, b0, None, replay=(x, y), replay_weight=1.0, **args)
    far2 = np.array([[-4.0, -4.0]])  # class 2, which the local films never show
    assert int(np.argmax(far2 @ wr + br)) == 2  # rehearsal keeps what the parent knew there
    assert float(np.mean(np.argmax(x @ wr + br, axis=1) == y)) > float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def _blocky_bundle(out: Path) -> Path:
    """A tiny network named like EfficientNet (stem, block1a, block2a with a residual add,
    top_conv, BatchNorm everywhere, head_pool/logits/predictions), untrained."""
    import keras
    from keras import layers

    from inference.bundle import BundleInfo, write_bundle
    from inference.preprocess import PreprocessConfig

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="block1a_conv")(x)
    x = layers.BatchNormalization(name="block1a_bn")(x)
    x = layers.MaxPooling2D(2, name="block1a_pool")(x)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="block2a_conv")(x)
    y = layers.BatchNormalization(name="block2a_bn")(y)
    x = layers.Add(name="block2a_add")([x, y])
    x = layers.Conv2D(8, 1, activation="relu", name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Flatten(name="head_pool")(x)  # keeps where the blob is
    x = layers.Dropout(0.1, name="head_dropout")(x)
    logits = layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, layers.Activation("softmax", name="predictions")(logits), name="blocky")
    info = BundleInfo(
        name="blocky",
        version="2.0.0",
        architecture="blocky-test",
        class_names=list(CLASSES),
        preprocessing=PreprocessConfig(size=32, channels=1),
        gradcam_layer="top_conv",
        description="Tiny test model with numbered blocks.",
    )
    return write_bundle(model, info, out)


def test_adapt_blocks_trains_only_the_top_blocks_with_rehearsal(films: Path, tmp_path: Path) -> None:
    import keras

    from inference.bundle import load_bundle
    from training.adapt import AdaptConfig, adapt
    from training.finetune import split_at_block

    parent = _blocky_bundle(tmp_path / "parent")
    before = _tree_digest(parent)
    rehearsal = tmp_path / "rehearsal"  # the parent's training distribution: other films of the same classes
    make_class_folder(rehearsal, dict.fromkeys(CLASSES, 8), size=48, seed=3)
    out = tmp_path / "child"
    result = adapt(
        AdaptConfig(
            parent=parent,
            out_dir=out,
            data=films,
            adapt_blocks=1,
            rehearsal=rehearsal,
            block_steps=60,
            block_learning_rate=3e-3,
            block_anchor=1e-4,
            keep_refused=True,
        )
    )
    lineage = result.report["lineage"]
    assert "last 1 blocks (from block2a)" in lineage["adapted_layers"]
    assert "24 images of the parent's training distribution" in lineage["rehearsal"]
    check = lineage["comparison"]["check"]
    assert check["child"]["balanced_accuracy"] > check["parent"]["balanced_accuracy"] + 0.15
    assert _tree_digest(parent) == before
    old, _ = load_bundle(parent)
    new, _ = load_bundle(out)

    def same(name: str) -> bool:
        a, b = old.get_layer(name).get_weights(), new.get_layer(name).get_weights()
        return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))

    for frozen in ("stem_conv", "block1a_conv", "stem_bn", "block1a_bn", "block2a_bn", "top_bn"):
        assert same(frozen), frozen  # the bottom and every BatchNorm (statistics too) as the parent's
    for trained in ("block2a_conv", "top_conv", "logits"):
        assert not same(trained), trained
    # The cut network computes what the whole one does.
    bottom, top, first = split_at_block(new, 1)
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    whole = keras.Model(new.inputs[0], new.get_layer("logits").output)(x)
    assert first == "block2a"
    assert np.allclose(np.asarray(top(bottom(x))[0]), np.asarray(whole), atol=1e-5)


def test_adapt_blocks_without_rehearsal_images_adapts_the_last_layer_only(films: Path, tmp_path: Path) -> None:
    from training.adapt import AdaptConfig, adapt

    parent = _blocky_bundle(tmp_path / "parent")
    report = adapt(AdaptConfig(parent=parent, out_dir=None, data=films, adapt_blocks=1, epochs=20)).report
    assert report["lineage"]["adapted_layers"] == "the classification layer"


def test_adapt_blocks_on_a_network_without_blocks_is_a_clear_error(
    parent: Path, films: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _main(
        "adapt",
        str(films),
        "--init",
        str(parent),
        "--out",
        str(tmp_path / "c"),
        "--adapt-blocks",
        "1",
        "--rehearsal",
        str(films),
    )
    assert rc == 1 and "no numbered blocks" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert _main("adapt", str(films), "--init", str(parent), "--adapt-blocks", "-1") == 1


def test_fit_top_distils_the_parents_answers_on_rehearsal_images(tmp_path: Path) -> None:
    from inference.bundle import load_bundle
    from training.adapt import fit_top, top_outputs
    from training.finetune import freeze_for_finetuning, split_at_block

    rng = np.random.default_rng(0)
    x_local = rng.random((32, 32, 32, 1)).astype(np.float32)
    x_reh = rng.random((48, 32, 32, 1)).astype(np.float32)
    agreement = {}
    for distill in (False, True):
        model, _ = load_bundle(_blocky_bundle(tmp_path / f"p{distill}"))
        freeze_for_finetuning(model, 1)
        bottom, top, _ = split_at_block(model, 1)
        h_local, h_reh = np.asarray(bottom(x_local)), np.asarray(bottom(x_reh))
        parent = top_outputs(top, h_reh)[0].argmax(axis=1)
        wrong = (parent + 1) % 3  # labels that contradict what the parent answers on its own images
        agree_local = top_outputs(top, h_local)[0].argmax(axis=1).astype(np.int32)  # local films teach nothing new
        fit_top(
            top,
            h_local,
            agree_local,
            np.ones(32),
            rehearsal=(h_reh, wrong),
            replay_weight=3.0,
            steps=40,
            learning_rate=3e-3,
            anchor=0.0,
            distill=distill,
        )
        agreement[distill] = float(np.mean(top_outputs(top, h_reh)[0].argmax(axis=1) == parent))
    assert agreement[True] > 0.8 > 0.5 > agreement[False]  # distilled: its answers kept, not the labels learnt
