"""The noise-independence benchmark's statistics: identical noise is kept by a group mean, independent noise is not."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import noise_independence


def test_identical_noise_correlates_fully_and_survives_the_group_mean():
    pattern = np.random.default_rng(0).normal(size=(10, 12, 8))
    stats = noise_independence.noise_agreement([pattern] * 4, np.ones(pattern.shape, bool))
    assert stats["correlation_min"] == pytest.approx(1.0)
    assert stats["group_mean_over_single"] == pytest.approx(1.0)


def test_independent_noise_averages_down_by_one_over_root_n():
    rng = np.random.default_rng(1)
    noise = [rng.normal(size=(20, 20, 20)) for _ in range(4)]
    mask = np.zeros(noise[0].shape, bool)
    mask[2:18, 2:18, 2:18] = True
    stats = noise_independence.noise_agreement(noise, mask)
    assert abs(stats["correlation_mean"]) < 0.05 and stats["correlation_max"] < 0.1
    assert stats["group_mean_over_single"] == pytest.approx(0.5, abs=0.02)
    assert stats["independent_expectation"] == pytest.approx(0.5)
