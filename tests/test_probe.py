"""Shortcut probes (issue 7): the source probe finds what features carry, lung masking hides the lungs."""

from __future__ import annotations

import numpy as np

from training.probe import fit_softmax, mask_lungs, source_probe


def test_softmax_probe_separates_separable_data():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(-2, 1, (40, 3)), rng.normal(2, 1, (40, 3))])
    y = np.array([0] * 40 + [1] * 40)
    w, b = fit_softmax(x, y, 2)
    assert np.mean(np.argmax(x @ w + b, axis=1) == y) > 0.95


def test_source_probe_sees_a_source_the_features_carry_and_not_one_they_do_not():
    rng = np.random.default_rng(1)
    n = 120
    labels = ["Normal"] * n + ["Pneumonia"] * n
    sources = (["north", "south"] * (n // 2)) * 2
    features = rng.normal(size=(2 * n, 8))
    # Normal images carry their scanner in feature 0; Pneumonia images carry nothing.
    is_south = np.array([s == "south" for s in sources])
    features[:n, 0] += np.where(is_south[:n], 3.0, -3.0)
    results = {r.label: r for r in source_probe(features, labels, sources)}
    assert results["Normal"].balanced_accuracy > 0.9
    assert abs(results["Pneumonia"].balanced_accuracy - 0.5) < 0.2
    assert results["Normal"].chance == 0.5 and results["Normal"].sources == ["north", "south"]
    assert results["Normal"].n_train + results["Normal"].n_test == n


def test_source_probe_skips_classes_with_one_source_and_tiny_sources():
    labels = ["A"] * 30 + ["B"] * 30
    sources = ["x"] * 30 + ["y"] * 25 + ["z"] * 5  # B: z has too few images to be probed
    assert source_probe(np.zeros((60, 4)), labels, sources) == []


def test_mask_lungs_fills_the_lungs_and_keeps_the_rest():
    gray = np.full((100, 100), 40, np.uint8)
    gray[30:70, 20:45] = 220  # "lungs" bright here, so the fill must change them
    gray[30:70, 55:80] = 220
    mask = gray == 220
    out = mask_lungs(gray, mask, grow=0.02)
    assert out.dtype == np.uint8 and out.shape == gray.shape
    assert abs(int(out[50, 30]) - 40) <= 2 and abs(int(out[50, 65]) - 40) <= 2
    assert (out[:10] == 40).all() and (out[-10:] == 40).all()
    assert (mask_lungs(gray, np.zeros_like(mask)) == gray).all()


def test_features_are_what_the_classifier_reads_not_its_logits():
    from tests.tiny_bundle import build_tiny_model
    from training.probe import feature_extractor

    model = build_tiny_model(32, 1, 3)
    features = feature_extractor(model)(np.zeros((2, 32, 32, 1), np.float32))
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"][-1]
    assert features.shape == (2, dense.kernel.shape[0]) and features.shape[1] != 3
