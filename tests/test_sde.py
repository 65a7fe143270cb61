"""VE-SDE: the schedule, the perturbation kernel and its discretisation agree with sigma(t)."""

import math

import pytest
import torch

from bids_jdam.diffusion import sde as sde_module
from bids_jdam.diffusion.sde import VESDE, sigma_max_from_data


def test_sigma_is_geometric_between_its_ends():
    sde = VESDE(0.01, 50.0)
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(sde.sigma(t), torch.tensor([0.01, math.sqrt(0.01 * 50.0), 50.0]))


def test_sigmas_are_sigma_of_uniform_times_largest_first():
    sde = VESDE(0.01, 50.0)
    expected = sde.sigma(torch.linspace(1, 0, 7, dtype=torch.float64))
    torch.testing.assert_close(sde.sigmas(7), expected)


def test_diffusion_squared_is_the_derivative_of_the_variance():
    sde = VESDE(0.01, 50.0)
    t, h = torch.tensor([0.3], dtype=torch.float64), 1e-6
    derivative = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.diffusion(t) ** 2, derivative, rtol=1e-6, atol=0)


def test_perturbation_kernel_statistics_match_sigma_t():
    sde = VESDE(0.01, 50.0)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 64, 64, generator=generator)
    t = torch.tensor([0.1, 0.5, 0.9])
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + std[:, None, None, None] * torch.randn(x0.shape, generator=generator)
    empirical_std = (x_t - x0).flatten(1).std(dim=1)
    torch.testing.assert_close(empirical_std, sde.sigma(t), rtol=0.03, atol=0)
    torch.testing.assert_close((x_t - x0).flatten(1).mean(dim=1) / sde.sigma(t), torch.zeros(3), atol=0.04, rtol=0)


def test_discretized_forward_chain_reaches_the_kernel_variance():
    """Many small steps of eq. (1) from t=0.2 to t=0.8 add variance sigma(0.8)^2 - sigma(0.2)^2."""
    sde = VESDE(0.01, 50.0)
    generator = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 1, 128, 128)
    steps = 60
    dt = 0.6 / steps
    for k in range(1, steps + 1):
        t = torch.tensor([0.2 + k * dt])
        drift, scale = sde.discretize(x, t, dt)
        x = x + drift + scale[:, None, None, None] * torch.randn(x.shape, generator=generator)
    expected = sde.sigma(torch.tensor(0.8)) ** 2 - sde.sigma(torch.tensor(0.2)) ** 2
    assert float(x.var()) == pytest.approx(float(expected), rel=0.03)


def test_prior_has_variance_sigma_max_squared():
    sde = VESDE(0.01, 50.0)
    prior = sde.prior_sampling((4, 1, 64, 64), torch.Generator().manual_seed(2))
    assert float(prior.std()) == pytest.approx(50.0, rel=0.02)


def test_sigma_max_rule_is_the_largest_pairwise_distance(monkeypatch):
    monkeypatch.setattr(sde_module, "DISTANCE_CHUNK_ROWS", 3)  # exercise several chunks
    images = torch.rand(8, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    images[5] += 4.0
    flat = images.flatten(1).double()
    brute_force = max(float((flat[i] - flat[j]).norm()) for i in range(8) for j in range(8))
    assert sigma_max_from_data(images) == pytest.approx(brute_force, rel=1e-9)


def test_invalid_noise_range_is_refused():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(1.0, 0.5)
