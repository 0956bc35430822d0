"""Dataset discovery, class maps, patient-level splits, duplicates and the input pipeline."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from inference.loading import load_image  # noqa: E402
from inference.preprocess import PreprocessConfig, preprocess_uint8, to_model_input  # noqa: E402
from tests.training_data import class_image, make_class_folder, write_csv, write_image  # noqa: E402
from training import pipeline  # noqa: E402
from training.datasets import (  # noqa: E402
    MIN_IMAGES_PER_CLASS,
    DatasetError,
    Sample,
    discover,
    map_label,
    parse_class_map,
    patient_id_from_name,
)
from training.duplicates import dhash, find_near_duplicates, hamming_pairs  # noqa: E402
from training.pipeline import class_weights, load_arrays, make_tf_dataset  # noqa: E402
from training.splits import patient_overlap, split_dataset  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Folders


def test_flat_folder(tmp_path: Path) -> None:
    make_class_folder(tmp_path, {"Normal": 5, "COVID-19": 4})
    (tmp_path / "Normal" / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    ds = discover(tmp_path)
    assert ds.origin == "folder"
    assert ds.classes == ["COVID-19", "Normal"]
    assert ds.counts() == {"COVID-19": 4, "Normal": 5}
    assert all(s.split == "" and s.path.is_absolute() for s in ds.samples)
    assert [Path(p).name for p, _ in ds.skipped] == ["notes.txt"]
    assert "unsupported" in ds.skipped[0][1]


def test_nested_images_and_suffixless_dicom_are_found(tmp_path: Path) -> None:
    make_class_folder(tmp_path, {"A": 4, "B": 4})
    write_image(tmp_path / "A" / "deeper" / "x.jpg", class_image(0, 99))
    ds = discover(tmp_path)
    assert ds.counts() == {"A": 5, "B": 4}


def test_pre_split_folder(tmp_path: Path) -> None:
    make_class_folder(tmp_path, {"A": 4, "B": 4}, split="train")
    make_class_folder(tmp_path, {"A": 2, "B": 2}, split="test", seed=1)
    make_class_folder(tmp_path, {"A": 1, "B": 1}, split="Validation", seed=2)
    ds = discover(tmp_path)
    assert ds.origin == "split-folder"
    assert ds.counts("train") == {"A": 4, "B": 4}
    assert ds.counts("test") == {"A": 2, "B": 2}
    assert ds.counts("val") == {"A": 1, "B": 1}
    # --ignore-split keeps the images but forgets the declared split.
    ds2 = discover(tmp_path, use_split=False)
    assert {s.split for s in ds2.samples} == {""}
    assert Counter(s.meta["original_split"] for s in ds2.samples) == {"train": 8, "test": 4, "val": 2}


def test_class_map_merges_renames_and_drops(tmp_path: Path) -> None:
    make_class_folder(
        tmp_path, {"Viral Pneumonia": 2, "Bacterial Pneumonia": 3, "Normal": 4, "Tuberculosis": 4, "COVID-19": 4}
    )
    cmap = parse_class_map("Viral Pneumonia=Pneumonia, Bacterial Pneumonia=Pneumonia,tuberculosis=")
    ds = discover(tmp_path, cmap)
    assert ds.counts() == {"COVID-19": 4, "Normal": 4, "Pneumonia": 5}
    assert sum("excluded by the class map" in r for _, r in ds.skipped) == 4


def test_parse_and_map_label() -> None:
    assert parse_class_map("A=B,C=B,D=") == {"A": "B", "C": "B", "D": ""}
    assert parse_class_map("") == {}
    with pytest.raises(DatasetError, match="OLD=NEW"):
        parse_class_map("Viral Pneumonia")
    m = {"Pnemonia": "Pneumonia", "Pnemonia/Virus/COVID-19": "COVID-19"}
    assert map_label("Pnemonia/Virus/COVID-19", m) == "COVID-19"
    assert map_label("pnemonia/virus", m) == "Pneumonia"  # case-insensitive, longest prefix
    assert map_label("Normal", m) is None


def test_patient_ids_from_public_file_names() -> None:
    assert patient_id_from_name("person83_bacteria_407.jpeg") == "person83"
    assert patient_id_from_name("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
    assert patient_id_from_name("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_id_from_name("00000013_005.png") == "00000013"
    assert patient_id_from_name("covid_1.png") == ""


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "empty"),
        (lambda p: write_image(p / "x.png", class_image(0, 0)).parent, "no class subfolders"),
        (lambda p: (p / "A").mkdir() or p, "No images found"),
    ],
)
def test_bad_data_paths(tmp_path: Path, make, words: str) -> None:
    with pytest.raises(DatasetError, match=words):
        discover(make(tmp_path))


def test_one_class_and_too_few_images(tmp_path: Path) -> None:
    make_class_folder(tmp_path / "one", {"Normal": 6})
    with pytest.raises(DatasetError, match="Only one class"):
        discover(tmp_path / "one")
    make_class_folder(tmp_path / "few", {"Normal": 6, "COVID-19": 2})
    with pytest.raises(DatasetError, match=f"at least {MIN_IMAGES_PER_CLASS} images") as err:
        discover(tmp_path / "few")
    assert "'COVID-19' has 2" in str(err.value)
    # Evaluation accepts what training refuses.
    assert discover(tmp_path / "one", min_classes=1, min_per_class=1).counts() == {"Normal": 6}


def test_exclude_patterns(tmp_path: Path) -> None:
    make_class_folder(tmp_path, {"A": 4, "B": 4}, split="train")
    make_class_folder(tmp_path, {"A": 2, "B": 2}, split="test", seed=1)
    ds = discover(tmp_path, exclude=["test/*"])
    assert {s.split for s in ds.samples} == {"train"}
    assert sum(r == "excluded by --exclude" for _, r in ds.skipped) == 4


# ---------------------------------------------------------------------------------------------
# CSV files


def test_generic_csv(tmp_path: Path) -> None:
    paths = make_class_folder(tmp_path / "imgs", {"Normal": 4, "Pneumonia": 4})
    rows = [
        (p.relative_to(tmp_path).as_posix(), p.parent.name, f"pat{i // 2}", "train" if i < 6 else "test", "siteA")
        for i, p in enumerate(paths)
    ]
    rows.append(("imgs/missing.png", "Normal", "", "", ""))
    rows.append(("imgs/Normal/img_0_0.png", "", "", "", ""))
    csv_path = write_csv(tmp_path / "labels.csv", ("path", "label", "patient_id", "split", "source"), rows)
    ds = discover(csv_path)
    assert ds.origin == "csv"
    assert ds.counts() == {"Normal": 4, "Pneumonia": 4}
    assert ds.counts("test") == {"Normal": 0, "Pneumonia": 2}
    assert {s.patient_id for s in ds.samples} == {f"pat{i}" for i in range(4)}
    assert ds.sources() == {"siteA": 8}
    reasons = sorted(r for _, r in ds.skipped)
    assert reasons == ["file not found", "no label"]


def test_generic_csv_class_column_and_extra_fields(tmp_path: Path) -> None:
    """The shared collection's manifest.csv spells the label column 'class'; other columns go to meta."""
    paths = make_class_folder(tmp_path, {"A": 4, "B": 4})
    rows = [(str(p), p.parent.name, "all", "55") for p in paths]  # absolute paths; 'all' is no split
    csv_path = write_csv(tmp_path / "sub" / "manifest.csv", ("path", "class", "split", "patient_age"), rows)
    ds = discover(csv_path, parse_class_map("B=C"))
    assert ds.classes == ["A", "C"]
    assert {s.split for s in ds.samples} == {""}
    assert ds.samples[0].meta == {"patient_age": "55"}


def test_unknown_csv_format(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "x.csv", ("foo", "bar"), [("1", "2")])
    with pytest.raises(DatasetError, match="not a CSV format"):
        discover(csv_path)
    with pytest.raises(DatasetError, match="is a file"):
        discover(write_image(tmp_path / "a.png", class_image(0, 1)))


CORONAHACK_HEADER = (
    "",
    "X_ray_image_name",
    "Label",
    "Dataset_type",
    "Label_2_Virus_category",
    "Label_1_Virus_category",
)


def _coronahack(tmp_path: Path) -> Path:
    root = tmp_path / "Coronahack-Chest-XRay-Dataset"
    rows = []
    spec = [
        ("Normal", "", "", 5),
        ("Pnemonia", "", "Virus", 4),
        ("Pnemonia", "", "bacteria", 4),
        ("Pnemonia", "COVID-19", "Virus", 5),
        ("Pnemonia", "Streptococcus", "bacteria", 1),
        ("Pnemonia", "ARDS", "Stress-Smoking", 1),
    ]
    k = 0
    for ci, (label, l2, l1, n) in enumerate(spec):
        for i in range(n):
            kind = "TEST" if i == 0 else "TRAIN"
            name = f"person{k}_{l1 or 'normal'}_{i}.jpeg"
            write_image(root / kind.lower() / name, class_image(ci, k))
            rows.append((k, name, label, kind, l2, l1))
            k += 1
    rows.append((k, "gone.jpeg", "Normal", "TRAIN", "", ""))
    return write_csv(root / "Chest_xray_Corona_Metadata.csv", CORONAHACK_HEADER, rows)


def test_coronahack_default_mapping(tmp_path: Path) -> None:
    ds = discover(_coronahack(tmp_path))
    assert ds.origin == "coronahack"
    # Virus + bacteria + Streptococcus + ARDS are pneumonias; COVID-19 is its own class.
    assert ds.counts() == {"COVID-19": 5, "Normal": 5, "Pneumonia": 10}
    assert ds.counts("test") == {"COVID-19": 1, "Normal": 1, "Pneumonia": 4}
    assert all(s.patient_id.startswith("person") for s in ds.samples)
    assert ds.skipped == [("gone.jpeg", "file not found")]


def test_coronahack_mapping_is_configurable(tmp_path: Path) -> None:
    cmap = parse_class_map(
        "Pnemonia/Virus=Viral Pneumonia,Pnemonia/bacteria=Bacterial Pneumonia,Pnemonia/Stress-Smoking="
    )
    ds = discover(_coronahack(tmp_path), cmap, min_per_class=1)
    assert ds.counts() == {"Bacterial Pneumonia": 5, "COVID-19": 5, "Normal": 5, "Viral Pneumonia": 4}
    assert any("excluded by the class map" in r for _, r in ds.skipped)
    # Mapping a default target renames it after the default mapping.
    ds2 = discover(_coronahack(tmp_path / "b"), parse_class_map("Pneumonia=Other pneumonia"))
    assert "Other pneumonia" in ds2.classes


COVID_HEADER = ("patientid", "offset", "sex", "age", "finding", "view", "modality", "date", "folder", "filename")


def test_covid_chestxray_metadata(tmp_path: Path) -> None:
    root = tmp_path / "covid-chestxray-dataset"
    rows = []
    spec = [
        ("Pneumonia/Viral/COVID-19", "PA", "X-ray", 3),
        ("COVID-19, ARDS", "AP Supine", "X-ray", 1),  # early versions' wording
        ("Pneumonia/Viral/COVID-19", "AP semi erect", "X-ray", 1),
        ("Pneumonia/Viral/COVID-19", "L", "X-ray", 2),  # lateral: left out by default
        ("Pneumonia/Viral/COVID-19", "Axial", "CT", 2),  # CT: never
        ("No Finding", "PA", "X-ray", 4),
        ("Pneumonia/Bacterial/Streptococcus", "AP", "X-ray", 2),
        ("SARS", "PA", "X-ray", 2),
        ("Tuberculosis", "PA", "X-ray", 1),
    ]
    k = 0
    for ci, (finding, view, modality, n) in enumerate(spec):
        for _ in range(n):
            name = f"img{k}.jpg"
            write_image(root / "images" / name, class_image(ci, k))
            rows.append((f"p{k // 2}", "", "M", "50", finding, view, modality, "", "images", name))
            k += 1
    csv_path = write_csv(root / "metadata.csv", COVID_HEADER, rows)
    ds = discover(csv_path)
    assert ds.origin == "covid-chestxray"
    assert ds.counts() == {"COVID-19": 5, "Normal": 4, "Pneumonia": 4}
    assert sum("is not frontal" in r for _, r in ds.skipped) == 2
    assert sum("is not X-ray" in r for _, r in ds.skipped) == 2
    assert any("'Tuberculosis' is not mapped" in r for _, r in ds.skipped)
    assert all(s.patient_id.startswith("p") for s in ds.samples)
    # All views when asked; CT still never.
    assert discover(csv_path, frontal_only=False).counts()["COVID-19"] == 7


# ---------------------------------------------------------------------------------------------
# Splits


def _samples(labels_and_patients: list[tuple[str, str]]) -> list[Sample]:
    return [
        Sample(path=Path(f"/x/{i}.png"), label=lab, patient_id=pid) for i, (lab, pid) in enumerate(labels_and_patients)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 25)), min_size=12, max_size=120),
    st.integers(0, 10_000),
    st.sampled_from([(0.15, 0.0), (0.2, 0.2), (0.3, 0.1)]),
    st.booleans(),
)
def test_split_never_puts_a_patient_in_two_splits(rows, seed: int, fractions: tuple[float, float], pure) -> None:
    # pure: each patient has one class; otherwise patients may have images of several classes.
    samples = _samples([(lab, f"{lab if pure else ''}p{pid}") for lab, pid in rows])
    splits = split_dataset(samples, *fractions, seed=seed)
    assert sum(len(v) for v in splits.values()) == len(samples)
    assert patient_overlap(splits) == {}
    assert all(s.split == name for name, items in splits.items() for s in items)
    if pure:  # every class keeps training images
        assert {s.label for s in splits["train"]} == {s.label for s in samples}


def test_split_is_stratified_and_reproducible() -> None:
    rows = [("A", "")] * 60 + [("B", "")] * 20
    a = split_dataset(_samples(rows), 0.25, 0.0, seed=3)
    assert Counter(s.label for s in a["val"]) == {"A": 15, "B": 5}
    b = split_dataset(_samples(rows), 0.25, 0.0, seed=3)
    assert [s.path for s in a["val"]] == [s.path for s in b["val"]]
    c = split_dataset(_samples(rows), 0.25, 0.0, seed=4)
    assert [s.path for s in a["val"]] != [s.path for s in c["val"]]


def test_split_respects_declared_splits() -> None:
    samples = _samples([("A", "")] * 10 + [("B", "")] * 10)
    for i, s in enumerate(samples):
        s.split = "test" if i % 5 == 0 else "train"
    splits = split_dataset(samples, 0.2, 0.3, seed=0)
    # The declared test split is kept as is (test_fraction is ignored); val comes from train.
    assert [s.path for s in splits["test"]] == [s.path for i, s in enumerate(samples) if i % 5 == 0]
    assert Counter(s.label for s in splits["val"]) == {"A": 2, "B": 2}
    # A patient already in the declared test split never gets training images.
    leaky = _samples([("A", "p1"), ("A", "p1"), ("A", "p2"), ("A", "p3"), ("B", "p4"), ("B", "p5")])
    leaky[0].split = "test"
    splits = split_dataset(leaky, 0.2, 0.0, seed=0)
    assert {s.split for s in leaky if s.patient_id == "p1"} == {"test"}


# ---------------------------------------------------------------------------------------------
# Near-duplicates


def test_dhash_finds_a_resized_recompressed_copy(tmp_path: Path) -> None:
    imgs = [class_image(i % 3, seed=i, size=64) for i in range(6)]
    a = [write_image(tmp_path / "a" / f"{i}.png", img) for i, img in enumerate(imgs)]
    # The copy: enlarged, brightened and saved as JPEG, in the other split.
    import cv2

    copy = np.clip(cv2.resize(imgs[4], (150, 150)).astype(np.int16) + 12, 0, 255).astype(np.uint8)
    b = [write_image(tmp_path / "b" / "copy.jpg", copy), write_image(tmp_path / "b" / "new.png", class_image(1, 777))]
    sa = [Sample(p, "x") for p in a]
    sb = [Sample(p, "x") for p in b]
    pairs = find_near_duplicates(sa, sb, max_distance=4)
    assert [(pa.path.name, pb.path.name) for pa, pb, _ in pairs] == [("4.png", "copy.jpg")]
    h = dhash(np.stack(imgs))
    assert h.dtype == np.uint64 and len(set(h.tolist())) == 6
    assert hamming_pairs(h, h, 0) == [(i, i, 0) for i in range(6)]


def test_same_hash_without_correlation_is_not_a_duplicate() -> None:
    """At 9x8 pixels many different chests share a hash; the correlation check tells them apart."""
    ramp = np.tile(np.linspace(0, 200, 64), (64, 1))
    bands = 0.1 * ramp + 200 * ((np.arange(64)[:, None] // 8) % 2)  # same left-to-right order, other picture
    xa = np.stack([ramp]).astype(np.uint8)
    xb = np.stack([bands, ramp + 20]).astype(np.uint8)
    assert hamming_pairs(dhash(xa), dhash(xb), 0) == [(0, 0, 0), (0, 1, 0)]
    a, b = [Sample(Path("a.png"), "x")], [Sample(Path("bands.png"), "x"), Sample(Path("brighter.png"), "x")]
    pairs = find_near_duplicates(a, b, arrays=(xa, xb))
    assert [(p.path.name, q.path.name) for p, q, _ in pairs] == [("a.png", "brighter.png")]


# ---------------------------------------------------------------------------------------------
# Decoding, caching and tf.data


def test_load_arrays_uses_the_shared_preprocessing_skips_and_caches(tmp_path: Path, monkeypatch) -> None:
    paths = make_class_folder(tmp_path / "d", {"A": 3})
    bad = tmp_path / "d" / "A" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    samples = [Sample(p, "A") for p in [*paths, bad]]
    config = PreprocessConfig(size=32, clahe=True)
    x, kept, skipped = load_arrays(samples, config, cache_dir=tmp_path / "cache", workers=2)
    assert x.shape == (3, 32, 32) and x.dtype == np.uint8
    assert [s.path for s in kept] == paths
    assert [p for p, _ in skipped] == [str(bad)]
    expected, _ = preprocess_uint8(load_image(paths[1]), config)
    np.testing.assert_array_equal(x[1], expected)

    # The second run reads the cache and decodes nothing.
    def fail(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(pipeline, "_decode_one", fail)
    x2, kept2, skipped2 = load_arrays(samples, config, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(x2, x)
    assert [s.path for s in kept2] == paths and skipped2 == skipped
    # The same files in another order (another seed, another split) come from the same cache.
    x3, kept3, skipped3 = load_arrays(samples[::-1], config, cache_dir=tmp_path / "cache")
    assert [s.path for s in kept3] == paths[::-1]
    np.testing.assert_array_equal(x3, x[::-1])
    assert skipped3 == skipped


def test_tf_dataset_matches_to_model_input_and_augments_in_range() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 32, 32), dtype=np.uint8)
    y = np.arange(10) % 3
    for channels in (1, 3):
        config = PreprocessConfig(size=32, channels=channels)
        ds = make_tf_dataset(x, y, config, batch_size=4, training=False)
        xs, ys = zip(*[(bx.numpy(), by.numpy()) for bx, by in ds])
        np.testing.assert_array_equal(np.concatenate(xs), to_model_input(x, config))  # bit for bit
        np.testing.assert_array_equal(np.concatenate(ys), y)
    config = PreprocessConfig(size=32)
    ds = make_tf_dataset(x, y, config, batch_size=5, training=True, seed=1)
    bx, by = next(iter(ds))
    assert bx.shape == (5, 32, 32, 1)
    assert float(bx.numpy().min()) >= 0.0 and float(bx.numpy().max()) <= 1.0
    assert sorted(np.concatenate([b.numpy() for _, b in ds]).tolist()) == sorted(y.tolist())  # shuffled, complete
    assert not np.array_equal(bx.numpy(), to_model_input(x[:5], config))


def test_class_weights_balance_the_classes() -> None:
    w = class_weights(np.array([0] * 6 + [1] * 2 + [2] * 4), 3)
    assert w == pytest.approx({0: 12 / 18, 1: 12 / 6, 2: 12 / 12})
    assert class_weights(np.array([0, 0]), 2)[1] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("ABC"), st.integers(0, 15), st.sampled_from(["n1", "n2", "s1", "s2"])),
        min_size=12,
        max_size=100,
    ),
    st.sets(st.sampled_from(["n1", "n2", "s1", "s2"]), min_size=1, max_size=2),
    st.integers(0, 1000),
)
def test_leave_source_out_never_trains_on_a_held_out_source(rows, held: set[str], seed: int) -> None:
    from training.splits import hold_out_sources

    samples = [
        Sample(path=Path(f"/x/{i}.png"), label=lab, patient_id=f"{src}-p{pid}", source=src)
        for i, (lab, pid, src) in enumerate(rows)
    ]
    held = {h for h in held if any(s.source == h for s in samples)}
    if not held:
        return
    rest, out = hold_out_sources(samples, sorted(held))
    splits = split_dataset(rest, 0.2, 0.0, seed=seed)
    splits["val"].extend(out)
    assert {s.source for s in out} == held
    assert not held & {s.source for s in splits["train"]}
    assert all(s.split == "val" for s in out)
    assert sum(len(v) for v in splits.values()) == len(samples)
    assert patient_overlap(splits) == {}


def test_leave_source_out_keeps_declared_test_images_in_the_test_split() -> None:
    from training.splits import hold_out_sources

    samples = [Sample(path=Path(f"/x/{i}.png"), label="AB"[i % 2], source="north") for i in range(6)]
    samples += [Sample(path=Path(f"/y/{i}.png"), label="AB"[i % 2], source="south") for i in range(20)]
    samples[0].split = "test"
    rest, held = hold_out_sources(samples, ["north"])
    assert len(held) == 5 and samples[0] in rest
    splits = split_dataset(rest, 0.2, 0.0, seed=0)
    assert splits["test"] == [samples[0]]
    assert "north" not in {s.source for s in splits["train"]}


def test_leave_source_out_names_an_unknown_source() -> None:
    from training.splits import hold_out_sources

    samples = [Sample(path=Path(f"/x/{i}.png"), label="A", source="north") for i in range(3)]
    with pytest.raises(ValueError, match="no images from south.*north"):
        hold_out_sources(samples, ["south"])
