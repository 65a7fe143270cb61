"""Samplers: correct moments on a known conditional Gaussian, per-slice reproducibility, cost accounting."""

import pytest
import torch
from torch import Tensor

from bids_jdam.config import NetworkConfig, SamplerConfig, SDEConfig
from bids_jdam.diffusion.noise import SliceNoise, generator_seed
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.samplers import SAMPLERS, network_evaluations, sample, sampler_sigmas
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.models.unet import ScoreUNet

SLOPE, SPREAD = 2.0, 0.5  # data: x | y ~ N(SLOPE * y, SPREAD^2) per pixel
SDE = VESDE(0.01, 50.0)


def exact_denoiser(x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
    """E[x0 | x_sigma, y] for the Gaussian above: the exact score's denoiser."""
    noise_variance = sigma.reshape(-1, 1, 1, 1) ** 2
    return (SPREAD**2 * x + noise_variance * SLOPE * cond) / (SPREAD**2 + noise_variance)


def _keys(indices):
    return [(0, "sub-01", "axial", index, 0) for index in indices]


@pytest.mark.parametrize(
    ("name", "steps"), [("pc", 200), ("heun", 30), ("heun_stochastic", 60), ("ancestral", 400), ("dpmpp_2m", 30)]
)
def test_samples_have_the_conditional_mean_and_variance(name, steps):
    cond = 2 * torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0)) - 1
    x = sample(exact_denoiser, cond, tuple(cond.shape), SamplerConfig(name=name, steps=steps), SDE, _keys(range(4)))
    standardized = (x - SLOPE * cond) / SPREAD  # N(0, 1) per pixel if the sampler is right
    assert abs(float(standardized.mean())) < 0.03
    assert float(standardized.var()) == pytest.approx(1.0, abs=0.06)
    slope = float(((x - x.mean()) * (cond - cond.mean())).mean() / cond.var())
    assert slope == pytest.approx(SLOPE, abs=0.05)


def test_few_ancestral_steps_under_disperse_the_samples():
    """The ancestral step treats D as the clean image, so coarse steps lose part of the posterior variance."""
    cond = 2 * torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0)) - 1
    variances = []
    for steps in (10, 400):
        x = sample(
            exact_denoiser, cond, tuple(cond.shape), SamplerConfig(name="ancestral", steps=steps), SDE, _keys(range(4))
        )
        variances.append(float(((x - SLOPE * cond) / SPREAD).var()))
    assert variances[0] < 0.6 < 0.9 < variances[1]


def _tiny_denoiser(parameterization: str):
    cfg = NetworkConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_groups=4)
    net = ScoreUNet(cfg, 16)
    torch.nn.init.normal_(net.output_conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    return build_denoiser(net, SDEConfig(parameterization=parameterization)).eval()


@pytest.mark.parametrize("parameterization", ["paper", "preconditioned"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_slice_is_the_same_at_batch_size_1_and_8(name, parameterization):
    denoiser = _tiny_denoiser(parameterization)
    cond = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    cfg = SamplerConfig(name=name, steps=4, corrector_steps=1)
    batch = sample(denoiser, cond, (8, 1, 16, 16), cfg, SDE, _keys(range(8)))
    alone = sample(denoiser, cond[5:6], (1, 1, 16, 16), cfg, SDE, _keys([5]))
    torch.testing.assert_close(alone[0], batch[5], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch[4], batch[5])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pc", 10 + 9 * 2), ("heun", 19), ("heun_stochastic", 19), ("ancestral", 10), ("dpmpp_2m", 10)],
)
def test_network_evaluations_counts_the_calls(name, expected):
    calls = []

    def counting_denoiser(x, sigma, cond):
        calls.append(sigma.shape)
        return exact_denoiser(x, sigma, cond)

    cond = torch.zeros(2, 1, 8, 8)
    cfg = SamplerConfig(name=name, steps=10, corrector_steps=2)
    sample(counting_denoiser, cond, (2, 1, 8, 8), cfg, SDE, _keys([0, 1]))
    assert len(calls) == network_evaluations(name, 10, 2) == expected
    assert all(shape == (2,) for shape in calls)


def test_sampling_starts_from_the_prior_with_variance_sigma_max_squared():
    seen = []

    def recording_denoiser(x, sigma, cond):
        seen.append((x.clone(), float(sigma[0])))
        return exact_denoiser(x, sigma, cond)

    cond = torch.zeros(4, 1, 64, 64)
    sample(recording_denoiser, cond, tuple(cond.shape), SamplerConfig(name="heun", steps=3), SDE, _keys(range(4)))
    first_x, first_sigma = seen[0]
    assert first_sigma == pytest.approx(SDE.sigma_max)
    assert float(first_x.std()) == pytest.approx(SDE.sigma_max, rel=0.02)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_schedules_run_from_sigma_max_down_to_sigma_min(name):
    sigmas = sampler_sigmas(name, 12, 0.01, 50.0)
    assert sigmas.shape == (12,)
    assert float(sigmas[0]) == pytest.approx(50.0) and float(sigmas[-1]) == pytest.approx(0.01)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_unknown_sampler_is_named_in_the_error():
    with pytest.raises(ValueError, match="'euler'"):
        network_evaluations("euler", 10, 1)


def test_slice_noise_rows_do_not_depend_on_the_rest_of_the_batch():
    together = SliceNoise(_keys([3, 7]), (1, 4, 4))
    alone = SliceNoise(_keys([7]), (1, 4, 4))
    for _ in range(3):
        torch.testing.assert_close(together.randn()[1], alone.randn()[0], rtol=0, atol=0)
    reference = SliceNoise(_keys([7]), (1, 4, 4)).randn()
    for other in ((0, "sub-01", "axial", 7, 1), (0, "sub-02", "axial", 7, 0), (1, "sub-01", "axial", 7, 0)):
        assert not torch.equal(SliceNoise([other], (1, 4, 4)).randn(), reference), other


def test_cpu_slice_noise_is_the_seeded_cpu_stream():
    """On CPU a slice's noise is a seeded CPU torch generator's stream, the same on every CPU machine; CUDA draws
    on the GPU instead."""
    key = (0, "sub-01", "axial", 7, 0)
    expected = torch.randn((1, 4, 4), generator=torch.Generator().manual_seed(generator_seed(key)))
    draws = SliceNoise([key], (1, 4, 4), "cpu").randn()
    assert draws.device.type == "cpu"
    torch.testing.assert_close(draws[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_temperature_scales_every_noise_of_every_sampler(name):
    # with a zero mean the exact denoiser is linear in x, so a sampler linear in its noises gives exactly tau x
    cond, keys = torch.zeros(2, 1, 16, 16), _keys(range(2))
    plain = sample(exact_denoiser, cond, tuple(cond.shape), SamplerConfig(name=name, steps=6), SDE, keys)
    cooled = sample(
        exact_denoiser, cond, tuple(cond.shape), SamplerConfig(name=name, steps=6, temperature=0.5), SDE, keys
    )
    assert float(plain.abs().mean()) > 0
    torch.testing.assert_close(cooled, 0.5 * plain, rtol=1e-4, atol=1e-6)


def test_slice_noise_refuses_a_scale_that_is_not_positive():
    with pytest.raises(ValueError, match="scale must be positive"):
        SliceNoise(_keys([0]), (1, 4, 4), scale=0.0)
