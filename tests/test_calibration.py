"""Spread calibration: a known under-dispersion is undone, the mean is untouched, the interval then covers."""

import numpy as np
import pytest
import torch

from bids_jdam.evaluate.calibration import fit_spread_scale
from bids_jdam.evaluate.probabilistic import coverage, spread_skill_ratio
from bids_jdam.synthesis.spread import inflate


def _ensemble(spread: float, seed: int, k: int = 8, shape=(40, 40)):
    """Truth and K samples whose posterior SD is 1 but whose samples spread by ``spread`` around a noisy mean."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=shape)
    centre = truth + rng.normal(size=shape)  # the posterior mean misses the truth by N(0, 1)
    samples = centre + spread * rng.normal(size=(k, *shape))
    return samples, truth, np.ones(shape, bool)


def test_an_under_dispersed_ensemble_is_scaled_back_to_nominal_coverage():
    calibration = fit_spread_scale([_ensemble(0.4, seed) for seed in range(3)], subjects=3)
    assert calibration.spread_scale == pytest.approx(2.5, rel=0.15)  # 1 / 0.4
    samples, truth, mask = _ensemble(0.4, seed=10)  # new data, same model
    assert spread_skill_ratio(samples, truth, mask) < 0.6
    calibrated = inflate(samples, calibration.spread_scale)
    np.testing.assert_allclose(calibrated.mean(axis=0), samples.mean(axis=0), atol=1e-12)
    cover = coverage(calibrated.mean(0), calibrated.std(0, ddof=1), truth, mask, len(samples))
    assert cover["0.90"] == pytest.approx(0.9, abs=0.03)
    assert spread_skill_ratio(calibrated, truth, mask) == pytest.approx(1.0, abs=0.15)


def test_a_calibrated_ensemble_keeps_its_spread():
    calibration = fit_spread_scale([_ensemble(1.0, seed) for seed in range(3)], subjects=3)
    assert calibration.spread_scale == pytest.approx(1.0, abs=0.1)
    assert calibration.to_dict()["num_samples"] == 8 and calibration.voxels == 3 * 1600


def test_one_sample_cannot_be_calibrated():
    samples, truth, mask = _ensemble(1.0, 0, k=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_spread_scale([(samples, truth, mask)], subjects=1)


def _slices(n_subjects: int = 3, size: int = 24, seed: int = 0):
    """Held-out slices (one per subject) whose truth is N(0, 1) noise."""
    from bids_jdam.evaluate.validation import ValidationSlices

    rng = np.random.default_rng(seed)
    pet = torch.from_numpy(rng.normal(size=(n_subjects, 1, size, size)).astype(np.float32))
    mask = torch.ones_like(pet, dtype=torch.bool)
    keys = [(f"{i:02d}", "axial", 10) for i in range(n_subjects)]
    return ValidationSlices(pet=pet, mri=torch.zeros_like(pet), mask=mask, keys=keys)


def test_the_temperature_with_the_lowest_calibrated_crps_is_chosen():
    from bids_jdam.config import SamplerConfig
    from bids_jdam.evaluate.calibration import calibrate_sampling

    data = _slices()
    rng = np.random.default_rng(1)
    centre = data.pet + torch.from_numpy(rng.normal(size=data.pet.shape).astype(np.float32))  # misses by N(0, 1)
    draws = torch.from_numpy(rng.normal(size=(4, *data.pet.shape)).astype(np.float32))

    def predict(sampler):  # K = 4 samples around the centre, spread by the temperature: a cooler K-mean is closer
        return centre + sampler.temperature * draws

    chosen = calibrate_sampling(predict, data, "test", SamplerConfig(name="heun", steps=18))
    crps = chosen.crps_by_temperature
    assert list(crps) == ["1", "0.7", "0.5", "0.35"] and crps["1"] > crps["0.7"] > crps["0.5"] > crps["0.35"]
    assert chosen.temperature == 0.35 and (chosen.sampler, chosen.steps) == ("heun", 18)
    # spread back to the mean's error: about sqrt(1 + tau^2 / K) / (tau sqrt(1 + 1 / K)) = 2.6
    assert 2.2 < chosen.spread_scale < 3.0


def test_a_temperature_that_changes_nothing_keeps_the_plain_sampler():
    from bids_jdam.config import SamplerConfig
    from bids_jdam.evaluate.calibration import calibrate_sampling

    data = _slices()
    samples = data.pet + torch.from_numpy(np.random.default_rng(2).normal(size=(4, *data.pet.shape)).astype(np.float32))
    chosen = calibrate_sampling(lambda sampler: samples, data, "test", SamplerConfig(name="heun", steps=18))
    assert chosen.temperature == 1.0 and len(set(chosen.crps_by_temperature.values())) == 1
