"""The metric protocol: fixed SUVR data range, brain mask, gaussian SSIM; known values."""

import math

import numpy as np
import pytest

from bids_jdam.evaluate.metrics import (
    SUVR_DATA_RANGE,
    image_quality,
    mae,
    nmse,
    noise_index,
    psnr,
    ssim,
    uniform_white_matter_region,
)


@pytest.fixture
def slice_and_mask():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.5, 2.0, size=(48, 48))
    mask = np.zeros((48, 48), bool)
    mask[8:40, 10:38] = True
    return truth * mask, mask


def test_psnr_of_a_constant_offset_uses_the_fixed_range(slice_and_mask):
    truth, mask = slice_and_mask
    offset = 0.1
    expected = 10 * math.log10(SUVR_DATA_RANGE**2 / offset**2)
    assert psnr(truth + offset, truth, mask) == pytest.approx(expected)
    # The range is fixed: scaling the whole image does not move it to the image's maximum.
    assert psnr(2 * truth + offset, 2 * truth, mask) == pytest.approx(expected)


def test_errors_outside_the_mask_are_ignored(slice_and_mask):
    truth, mask = slice_and_mask
    corrupted = truth.copy()
    corrupted[~mask] = 100.0
    assert psnr(corrupted, truth, mask) == math.inf
    assert mae(corrupted, truth, mask) == 0.0


def test_ssim_is_one_for_identical_images_and_lower_otherwise(slice_and_mask):
    truth, mask = slice_and_mask
    assert ssim(truth, truth, mask) == pytest.approx(1.0)
    noisy = truth + np.random.default_rng(2).normal(0, 0.3, truth.shape) * mask
    assert ssim(noisy, truth, mask) < 0.9


def test_ssim_works_on_volumes():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.5, 2.0, size=(20, 22, 24))
    mask = np.ones_like(truth, bool)
    assert ssim(truth, truth, mask) == pytest.approx(1.0)
    assert ssim(truth * 0.5, truth, mask) < 1.0


def test_mae_and_nmse_known_values(slice_and_mask):
    truth, mask = slice_and_mask
    assert mae(truth + 0.2, truth, mask) == pytest.approx(0.2)
    assert nmse(1.1 * truth, truth, mask) == pytest.approx(0.01)
    assert nmse(np.zeros_like(truth), truth, mask) == pytest.approx(1.0)
    assert set(image_quality(truth, truth, mask)) == {"psnr_db", "ssim", "mae_suvr", "nmse"}


def test_noise_index_is_mean_over_white_matter_spread():
    pet = np.ones((10, 10, 10)) * 2.0
    brain = np.ones_like(pet, bool)
    wm_probability = np.zeros_like(pet)
    wm_probability[2:8, 2:8, 2:8] = 1.0
    region = uniform_white_matter_region(wm_probability)
    assert region.sum() == 4**3  # eroded by one voxel
    pet[region] += np.tile([-0.1, 0.1], 32)
    assert noise_index(pet, brain, region) == pytest.approx(pet[brain].mean() / 0.1)


def test_empty_mask_is_an_error(slice_and_mask):
    truth, mask = slice_and_mask
    with pytest.raises(ValueError, match="empty"):
        psnr(truth, truth, np.zeros_like(mask))


def test_uncertainty_error_correlation_sees_calibrated_errors_and_smoothing_sharpens_it():
    from bids_jdam.evaluate.consistency import uncertainty_error_correlation

    rng = np.random.default_rng(0)
    shape = (24, 24, 24)
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    zz = np.indices(shape)[0]
    std = 0.05 + 0.2 * zz / shape[0]  # uncertainty grows smoothly along one axis
    truth = np.ones(shape)
    calibrated = truth + rng.normal(0, std)  # errors drawn with exactly that spread
    voxelwise = uncertainty_error_correlation(std, calibrated, truth, mask)
    smoothed = uncertainty_error_correlation(std, calibrated, truth, mask, smoothing_voxels=2.0)
    assert 0.2 < voxelwise < smoothed
    unrelated = truth + rng.normal(0, 0.1, shape)  # errors that do not follow the map
    assert abs(uncertainty_error_correlation(std, unrelated, truth, mask, smoothing_voxels=2.0)) < 0.2


def test_uncertainty_calibration_tells_a_calibrated_map_from_an_overconfident_one():
    from bids_jdam.evaluate.consistency import uncertainty_calibration

    rng = np.random.default_rng(1)
    shape = (20, 20, 20)
    mask = np.ones(shape, bool)
    std = np.broadcast_to(np.linspace(0.02, 0.3, shape[0])[:, None, None], shape)
    truth = np.zeros(shape)
    k = 4
    # the mean of K posterior draws misses the truth by posterior noise plus the mean's own sampling error
    calibrated = truth + rng.normal(0, std * np.sqrt(1 + 1 / k))
    good = uncertainty_calibration(std, calibrated, truth, mask, num_samples=k)
    assert good["spread_skill_ratio"] == pytest.approx(1.0, abs=0.05)
    rmse = [b["rmse"] for b in good["bins"]]
    assert rmse == sorted(rmse) and rmse[-1] > 3 * rmse[0]
    assert sum(b["voxels"] for b in good["bins"]) == mask.sum()
    overconfident = uncertainty_calibration(std / 2, calibrated, truth, mask, num_samples=k)
    assert overconfident["spread_skill_ratio"] == pytest.approx(0.5, abs=0.03)  # below 1: overconfident
    assert overconfident["coverage"]["0.90"] < good["coverage"]["0.90"]
