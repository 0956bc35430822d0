"""The feature-space out-of-distribution score (issue 13, section 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.ood import OOD_FILE, fit_feature_gaussians, load_feature_gaussians


def _features(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + rng.normal(0, 1, (n, centres.shape[1])), labels


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 4, (3, 16))
    train, labels = _features(rng, 3000, centres)
    val, _ = _features(rng, 1000, centres)
    test, _ = _features(rng, 2000, centres)
    far = rng.normal(0, 1, (200, 16)) + 25.0  # another kind of picture altogether
    return train, labels, val, test, far


def test_the_threshold_keeps_the_chosen_share_of_in_distribution_films(data) -> None:
    train, labels, val, test, _ = data
    scorer = fit_feature_gaussians(train, labels, val, quantile=0.99)
    rejected = scorer.is_outlier(test).mean()
    assert 0.0 < rejected < 0.03  # about 1% of new in-distribution films, not none, not many


def test_films_far_from_every_class_are_outliers(data) -> None:
    train, labels, val, _, far = data
    assert fit_feature_gaussians(train, labels, val).is_outlier(far).all()


def test_the_distance_uses_the_covariance_not_only_the_mean() -> None:
    # Features spread widely along axis 0 and tightly along axis 1: a step along axis 1 is far.
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, (4000, 2)) * [10.0, 0.1]
    scorer = fit_feature_gaussians(train, np.zeros(4000), train[:500])
    along_wide, along_narrow = scorer.distances(np.array([[5.0, 0.0], [0.0, 5.0]]))
    assert along_narrow > 10 * along_wide


def test_save_and_load_round_trip(tmp_path: Path, data) -> None:
    train, labels, val, test, _ = data
    scorer = fit_feature_gaussians(train, labels, val)
    scorer.save(tmp_path)
    loaded = load_feature_gaussians(tmp_path)
    assert loaded is not None and loaded.threshold == pytest.approx(scorer.threshold)
    np.testing.assert_allclose(loaded.distances(test[:20]), scorer.distances(test[:20]), rtol=1e-4)


def test_a_model_without_a_scorer_has_none(tmp_path: Path) -> None:
    assert load_feature_gaussians(tmp_path) is None


def test_a_damaged_scorer_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / OOD_FILE, means=np.zeros((3, 4)), precision=np.eye(5), threshold=1.0, quantile=0.99)
    with pytest.raises(ValueError, match="damaged"):
        load_feature_gaussians(tmp_path)


def test_fitting_needs_matching_labels() -> None:
    with pytest.raises(ValueError):
        fit_feature_gaussians(np.zeros((10, 3)), np.zeros(9), np.zeros((5, 3)))
