"""Denoising score matching: the paper's Algorithm 1, and EDM's weighted variant for the preconditioned denoiser.

Both are minimised by the exact conditional score/denoiser; each is the squared norm over a slice's pixels,
averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bids_jdam.config import LossConfig
from bids_jdam.diffusion.parameterization import Denoiser
from bids_jdam.diffusion.sde import VESDE


@dataclass(frozen=True)
class GlobalBatchNoise:
    """The noise of one process's rows of a global batch: every process draws the whole batch's noise from one
    seeded generator and keeps its own rows, so N training processes draw what one process would."""

    generator: torch.Generator
    shards: int = 1
    shard: int = 0


NoiseSource = torch.Generator | GlobalBatchNoise | None


def _draw(kind: str, shape: tuple[int, ...], generator: NoiseSource, device: torch.device) -> Tensor:
    """Uniform or normal draws from ``generator`` (on its own device), delivered on ``device``."""
    if isinstance(generator, GlobalBatchNoise):
        rows = shape[0]
        draws = _draw(kind, (rows * generator.shards, *shape[1:]), generator.generator, device)
        return draws[generator.shard * rows : (generator.shard + 1) * rows]
    source = generator.device if generator is not None else device
    draw = torch.rand if kind == "uniform" else torch.randn
    return draw(shape, generator=generator, device=source).to(device)


def _sum_over_pixels(values: Tensor) -> Tensor:
    return values.flatten(1).sum(dim=1)


def paper_dsm_loss(
    denoiser: Denoiser,
    sde: VESDE,
    x0: Tensor,
    cond: Tensor | None,
    generator: NoiseSource = None,
    time_epsilon: float = LossConfig.time_epsilon,
) -> Tensor:
    """Algorithm 1: t ~ U(eps, 1), z ~ N(0, I), x_t = x0 + sigma(t) z, loss || sigma(t) s(x_t, y, t) + z ||^2."""
    t = time_epsilon + (1 - time_epsilon) * _draw("uniform", (x0.shape[0],), generator, x0.device)
    sigma = sde.sigma(t)
    z = _draw("normal", tuple(x0.shape), generator, x0.device)
    sigma_b = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    score = denoiser.score(x0 + sigma_b * z, sigma, cond)
    return _sum_over_pixels((sigma_b * score + z) ** 2).mean()


def preconditioned_dsm_loss(
    denoiser: Denoiser,
    sde: VESDE,
    x0: Tensor,
    cond: Tensor | None,
    generator: NoiseSource = None,
    p_mean: float = LossConfig.p_mean,
    p_std: float = LossConfig.p_std,
) -> Tensor:
    """EDM: ln sigma ~ N(P_mean, P_std^2) clamped to the SDE's range, loss lambda(sigma) || D(x0 + sigma z) - x0 ||^2.

    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 gives the network a unit-variance target.
    """
    log_sigma = p_mean + p_std * _draw("normal", (x0.shape[0],), generator, x0.device)
    sigma = log_sigma.exp().clamp(sde.sigma_min, sde.sigma_max)
    z = _draw("normal", tuple(x0.shape), generator, x0.device)
    sigma_b = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    sigma_data = denoiser.sigma_data
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    denoised = denoiser(x0 + sigma_b * z, sigma, cond)
    return (weight * _sum_over_pixels((denoised - x0) ** 2)).mean()


def dsm_loss(
    denoiser: Denoiser,
    sde: VESDE,
    x0: Tensor,
    cond: Tensor | None,
    generator: NoiseSource = None,
    settings: LossConfig | None = None,
) -> Tensor:
    """The training loss that matches ``denoiser.parameterization`` (a scalar), with ``settings`` (default: paper's)."""
    settings = settings or LossConfig()
    if denoiser.parameterization == "paper":
        return paper_dsm_loss(denoiser, sde, x0, cond, generator, settings.time_epsilon)
    if denoiser.parameterization == "preconditioned":
        return preconditioned_dsm_loss(denoiser, sde, x0, cond, generator, settings.p_mean, settings.p_std)
    raise ValueError(f"no loss for parameterization {denoiser.parameterization!r}")
