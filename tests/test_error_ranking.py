"""Scores that tell whether an SD map ranks the error, on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bids_jdam.evaluate.error_ranking import (
    constant_band_scale,
    error_ranking_scores,
    gaussian_crps,
    local_error_scale,
    pooled_scores,
    predictive_scale,
    recalibrated_scale,
    relative_ause,
    reliability_table,
)


@pytest.fixture(scope="module")
def heteroscedastic():
    """Errors drawn with a known SD, threefold larger in one half of a 3D volume than in the other."""
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    true_sd = np.where(np.arange(shape[0])[:, None, None] < 20, 0.1, 0.3) * np.ones(shape)
    mean = rng.normal(1.0, 0.2, size=shape)
    truth = mean + rng.normal(size=shape) * true_sd
    mask = np.ones(shape, dtype=bool)
    mask[:3] = False
    return true_sd, mean, truth, mask


def test_the_true_sd_ranks_the_error_and_beats_the_constant_band(heteroscedastic):
    true_sd, mean, truth, mask = heteroscedastic
    scores = error_ranking_scores(true_sd, mean, truth, mask)
    assert 0.88 < scores["coverage_90"] < 0.92
    assert all(0.87 < row["coverage"] < 0.93 for row in scores["reliability"])
    assert scores["rmse_top_over_bottom_fifth"] > 2.0
    assert 0.35 < scores["ause_relative"] < 0.55
    assert 0.9 < scores["crps_over_constant_band"] < 0.96


def test_a_constant_sd_is_calibrated_on_average_and_ranks_nothing(heteroscedastic):
    _, mean, truth, mask = heteroscedastic
    width = constant_band_scale(mean, truth, mask)
    constant = np.full(mask.shape, width)
    scores = error_ranking_scores(constant, mean, truth, mask)
    assert scores["coverage_90"] == pytest.approx(0.9, abs=0.005)
    assert scores["crps_over_constant_band"] == pytest.approx(1.0)
    assert 0.8 < relative_ause(np.random.default_rng(1).random(mask.shape), mean, truth, mask) < 1.2
    table = reliability_table(np.random.default_rng(2).random(mask.shape), mean, truth, mask)
    rmse = [row["rmse"] for row in table]
    assert max(rmse) / min(rmse) < 1.1


def test_a_map_that_points_the_wrong_way_scores_worse_than_random(heteroscedastic):
    true_sd, mean, truth, mask = heteroscedastic
    inverted = 0.4 - true_sd
    assert relative_ause(inverted, mean, truth, mask) > 1.3
    assert error_ranking_scores(inverted, mean, truth, mask)["rmse_top_over_bottom_fifth"] < 0.6


def test_gaussian_crps_matches_its_closed_form_at_zero_error():
    mask = np.ones((2, 2), dtype=bool)
    assert gaussian_crps(np.zeros((2, 2)), 2.0, np.zeros((2, 2)), mask) == pytest.approx(
        2.0 * (2 / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi))
    )


def test_predictive_scale_adds_the_mean_s_own_uncertainty():
    assert predictive_scale(np.array([1.0]), 4)[0] == pytest.approx(np.sqrt(1.25))


def test_the_local_error_oracle_gains_only_where_the_error_size_varies(heteroscedastic):
    true_sd, mean, truth, mask = heteroscedastic
    varying = error_ranking_scores(true_sd, mean, truth, mask, smoothing_voxels=2.0)["oracle_crps_over_constant_band"]
    assert 0.9 < varying < 0.97
    even = mean + np.random.default_rng(3).normal(size=mask.shape) * 0.2
    flat = error_ranking_scores(true_sd, mean, even, mask, smoothing_voxels=2.0)["oracle_crps_over_constant_band"]
    assert flat > 0.98
    assert error_ranking_scores(true_sd, mean, truth, mask)["oracle_crps_over_constant_band"] is None


def test_the_oracle_of_stacked_slices_is_smoothed_within_each_slice():
    """Stacked 2D slices (of different brains or planes) must not share their error through the smoothing."""
    mean = np.zeros((2, 16, 16))
    truth = np.stack([np.ones((16, 16)), np.zeros((16, 16))])
    mask = np.ones(mean.shape, dtype=bool)
    within = local_error_scale(mean, truth, mask, (0, 2.0, 2.0))
    assert np.allclose(within[0], 1.0) and np.allclose(within[1], 0.0)
    assert local_error_scale(mean, truth, mask, 2.0)[1].max() > 0.1
    assert (
        error_ranking_scores(1 + np.arange(mean.size).reshape(mean.shape), mean, truth, mask, (0, 2.0, 2.0))[
            "oracle_crps_over_constant_band"
        ]
        is not None
    )


def test_recalibration_keeps_the_ranking_and_makes_the_widths_right(heteroscedastic):
    """A map twice too wide that ranks perfectly scores badly, its recalibration as well as the true SD; a
    constant map recalibrated is the constant band."""
    true_sd, mean, truth, mask = heteroscedastic
    too_wide = error_ranking_scores(2 * true_sd, mean, truth, mask)
    right = error_ranking_scores(true_sd, mean, truth, mask)
    assert too_wide["crps_over_constant_band"] > 1.05
    assert too_wide["recalibrated_crps_over_constant_band"] == pytest.approx(right["crps_over_constant_band"], abs=0.01)
    assert right["recalibrated_crps_over_constant_band"] < 0.95
    flat = error_ranking_scores(np.full(mask.shape, 0.5), mean, truth, mask)
    assert flat["recalibrated_crps_over_constant_band"] == pytest.approx(1.0, abs=0.01)
    assert flat["correlation_smoothed"] == 0.0  # a constant map ranks nothing (and warns of nothing)
    widths = recalibrated_scale(true_sd, mean, truth, mask)
    assert (widths[~mask] == 0).all() and np.isclose(
        np.sort(np.unique(widths[mask]))[[0, -1]], [0.1, 0.3], rtol=0.1
    ).all()


def test_pooling_images_scores_all_their_voxels_against_one_band():
    """Two images, each with its own constant error SD (0.1 and 0.3): a map of the true SDs ranks nothing within an
    image but, pooled, ranks the quiet image below the busy one and beats one band for both (two SD levels threefold
    apart: CRPS about 0.93 of the band's)."""
    rng = np.random.default_rng(1)
    shape, images = (30, 30, 30), []
    for sd in (0.1, 0.3):
        mean = rng.normal(1.0, 0.2, size=shape)
        images.append((np.full(shape, sd), mean, mean + rng.normal(size=shape) * sd, np.ones(shape, dtype=bool)))
    pooled = pooled_scores(images)
    assert pooled["images"] == 2 and pooled["voxels"] == 2 * 30**3
    assert 0.88 < pooled["coverage_90"] < 0.92
    assert pooled["rmse_top_over_bottom_fifth"] > 2.5
    assert 0.91 < pooled["crps_over_constant_band"] < 0.95
    assert pooled["ause_relative"] < 0.6
    alone = error_ranking_scores(*images[0])
    assert alone["crps_over_constant_band"] == pytest.approx(1.0, abs=0.01)  # one image: the band is as good
    assert pooled["oracle_crps_over_constant_band"] is None  # no smoothing, no oracle


def test_pooled_oracle_and_right_widths_know_each_images_level():
    """Two images whose errors differ threefold in level, scored with a constant map that ranks nothing: its pooled
    widths made right stay the one band, while the oracle (each image's own smoothed error) reaches what the true
    SDs score."""
    rng = np.random.default_rng(2)
    shape, flat, true = (24, 24, 24), [], []
    for sd in (0.1, 0.3):
        mean = rng.normal(1.0, 0.2, size=shape)
        truth, mask = mean + rng.normal(size=shape) * sd, np.ones(shape, dtype=bool)
        flat.append((np.full(shape, 0.2), mean, truth, mask))
        true.append((np.full(shape, sd), mean, truth, mask))
    constant = pooled_scores(flat, smoothing_voxels=2.0)
    assert constant["recalibrated_crps_over_constant_band"] == pytest.approx(1.0, abs=0.01)
    assert constant["oracle_crps_over_constant_band"] == pytest.approx(
        pooled_scores(true)["crps_over_constant_band"], abs=0.02
    )
    assert constant["oracle_crps_over_constant_band"] < 0.95


def test_pooling_nothing_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        pooled_scores([])
