"""Source-balanced sampling: small hospitals are heard, classes weigh the same."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.preprocess import PreprocessConfig  # noqa: E402
from training.pipeline import group_balanced_weights, make_tf_dataset  # noqa: E402


def test_every_class_weighs_the_same_and_sources_by_square_root() -> None:
    # class 0: 900 images from A and 100 from B; class 1: 50 images from C
    labels = np.array([0] * 1000 + [1] * 50)
    groups = ["A"] * 900 + ["B"] * 100 + ["C"] * 50
    w = group_balanced_weights(labels, groups, n_classes=2)
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == 0].sum() == pytest.approx(0.5)
    assert w[labels == 1].sum() == pytest.approx(0.5)
    mass_a, mass_b = w[:900].sum(), w[900:1000].sum()
    assert mass_a / mass_b == pytest.approx(np.sqrt(900 / 100))  # 3:1, not 9:1
    assert np.allclose(w[:900], w[0])  # images of one group are equally likely


def test_power_zero_gives_every_source_of_a_class_the_same_mass() -> None:
    labels = np.array([0] * 10 + [0] * 90)
    w = group_balanced_weights(labels, ["x"] * 10 + ["y"] * 90, n_classes=1, power=0.0)
    assert w[:10].sum() == pytest.approx(w[10:].sum())


def test_sampled_batches_follow_the_weights() -> None:
    config = PreprocessConfig(size=8)
    x = np.zeros((40, 8, 8), np.uint8)
    y = np.array([0] * 36 + [1] * 4, np.int32)
    weights = group_balanced_weights(y, ["s"] * 40, n_classes=2)
    ds = make_tf_dataset(x, y, config, batch_size=10, training=True, seed=3, augment=False, sampling_weights=weights)
    assert int(ds.cardinality()) == 4  # an epoch is still ceil(n / batch) batches
    drawn = np.concatenate([b[1].numpy() for _ in range(5) for b in ds])
    assert len(drawn) == 200
    assert 0.35 < drawn.mean() < 0.65  # the rare class is drawn about half the time, not 10%


def test_bad_sampling_weights_are_refused() -> None:
    config = PreprocessConfig(size=8)
    x = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="sampling_weights"):
        make_tf_dataset(x, np.zeros(4, np.int32), config, 2, training=True, sampling_weights=np.zeros(4))
