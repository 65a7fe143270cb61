"""Probabilistic scores on ensembles whose answer is known: calibrated, under-dispersed, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from bids_jdam.evaluate.probabilistic import (
    coverage,
    fair_crps,
    probabilistic_scores,
    rank_histogram,
    spread_skill_ratio,
)

SHAPE = (40, 50, 30)
K = 8


def ensemble(spread: float, k: int = K, seed: int = 0):
    """Per voxel a centre; the truth and k samples drawn around it with SD 0.2, the samples scaled by ``spread``."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.5, 2.5, SHAPE)
    truth = centre + 0.2 * rng.standard_normal(SHAPE)
    samples = centre + spread * 0.2 * rng.standard_normal((k, *SHAPE))
    mask = np.ones(SHAPE, bool)
    mask[:5] = False
    return samples, truth, mask


def test_calibrated_ensemble_scores_as_calibrated():
    samples, truth, mask = ensemble(1.0)
    assert spread_skill_ratio(samples, truth, mask) == pytest.approx(1.0, abs=0.02)
    cover = coverage(samples.mean(0), samples.std(0, ddof=1), truth, mask, K)
    assert cover["0.50"] == pytest.approx(0.5, abs=0.02) and cover["0.90"] == pytest.approx(0.9, abs=0.02)
    counts = np.array(rank_histogram(samples, truth, mask))
    assert len(counts) == K + 1
    assert counts.min() / counts.max() > 0.9  # flat
    # the expected CRPS of a calibrated Gaussian forecast is sigma / sqrt(pi); fair CRPS is unbiased for it
    assert fair_crps(samples, truth, mask) == pytest.approx(0.2 / np.sqrt(np.pi), rel=0.02)


def test_under_dispersed_ensemble_is_overconfident():
    samples, truth, mask = ensemble(0.3)
    assert spread_skill_ratio(samples, truth, mask) < 0.5
    cover = coverage(samples.mean(0), samples.std(0, ddof=1), truth, mask, K)
    assert cover["0.90"] < 0.5
    counts = np.array(rank_histogram(samples, truth, mask))
    assert counts[0] > 3 * counts[K // 2] and counts[-1] > 3 * counts[K // 2]  # U-shaped
    calibrated, _, _ = ensemble(1.0)
    assert fair_crps(samples, truth, mask) > fair_crps(calibrated, truth, mask)


def test_over_dispersed_ensemble_is_underconfident():
    samples, truth, mask = ensemble(2.0)
    assert spread_skill_ratio(samples, truth, mask) > 1.5
    assert coverage(samples.mean(0), samples.std(0, ddof=1), truth, mask, K)["0.50"] > 0.7


def test_crps_of_one_value_is_its_mae():
    samples, truth, mask = ensemble(1.0, k=1)
    assert fair_crps(samples, truth, mask) == pytest.approx(np.mean(np.abs(samples[0] - truth)[mask]))
    with pytest.raises(ValueError, match="at least 2"):
        spread_skill_ratio(samples, truth, mask)


def test_crps_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    samples, truth, mask = rng.random((5, 4, 3, 2)), rng.random((4, 3, 2)), np.ones((4, 3, 2), bool)
    k = len(samples)
    skill = np.abs(samples - truth).mean(0)
    pairs = np.abs(samples[:, None] - samples[None]).sum((0, 1)) / (2 * k * (k - 1))
    assert fair_crps(samples, truth, mask) == pytest.approx(float((skill - pairs).mean()))


def test_scores_per_region_and_mismatched_shapes():
    samples, truth, mask = ensemble(1.0)
    left = np.zeros(SHAPE, bool)
    left[:20] = True
    scores = probabilistic_scores(samples, truth, mask, regions={"left": left, "nowhere": np.zeros(SHAPE, bool)})
    assert set(scores) >= {"crps", "spread_skill_ratio", "coverage", "rank_histogram", "mae_of_mean", "regions"}
    assert list(scores["regions"]) == ["left"]
    assert scores["regions"]["left"]["voxels"] == int((mask & left).sum())
    with pytest.raises(ValueError, match="do not match"):
        fair_crps(samples[:, :-1], truth, mask)
