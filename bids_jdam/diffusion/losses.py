"""Denoising score matching: the paper's Algorithm 1, and EDM's weighted variant for the preconditioned denoiser.

Both are minimised by the exact conditional score/denoiser; each is the squared norm over a slice's pixels,
averaged over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bids_jdam.diffusion.parameterization import Denoiser
from bids_jdam.diffusion.sde import VESDE

# Algorithm 1 draws t ~ U(0, 1); score-SDE starts at a small epsilon to keep sigma(t) away from its lower end.
TIME_EPSILON = 1e-5
# EDM's log-normal training distribution of sigma: ln sigma ~ N(P_MEAN, P_STD^2).
P_MEAN = -1.2
P_STD = 1.2


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform or normal draws from ``generator`` (on its own device), delivered on ``device``."""
    source = generator.device if generator is not None else device
    draw = torch.rand if kind == "uniform" else torch.randn
    return draw(shape, generator=generator, device=source).to(device)


def _sum_over_pixels(values: Tensor) -> Tensor:
    return values.flatten(1).sum(dim=1)


def paper_dsm_loss(
    denoiser: Denoiser, sde: VESDE, x0: Tensor, cond: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """Algorithm 1: t ~ U(eps, 1), z ~ N(0, I), x_t = x0 + sigma(t) z, loss || sigma(t) s(x_t, y, t) + z ||^2."""
    t = TIME_EPSILON + (1 - TIME_EPSILON) * _draw("uniform", (x0.shape[0],), generator, x0.device)
    sigma = sde.sigma(t)
    z = _draw("normal", tuple(x0.shape), generator, x0.device)
    sigma_b = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    score = denoiser.score(x0 + sigma_b * z, sigma, cond)
    return _sum_over_pixels((sigma_b * score + z) ** 2).mean()


def preconditioned_dsm_loss(
    denoiser: Denoiser, sde: VESDE, x0: Tensor, cond: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """EDM: ln sigma ~ N(P_mean, P_std^2) clamped to the SDE's range, loss lambda(sigma) || D(x0 + sigma z) - x0 ||^2.

    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 gives the network a unit-variance target.
    """
    log_sigma = P_MEAN + P_STD * _draw("normal", (x0.shape[0],), generator, x0.device)
    sigma = log_sigma.exp().clamp(sde.sigma_min, sde.sigma_max)
    z = _draw("normal", tuple(x0.shape), generator, x0.device)
    sigma_b = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    sigma_data = denoiser.sigma_data
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    denoised = denoiser(x0 + sigma_b * z, sigma, cond)
    return (weight * _sum_over_pixels((denoised - x0) ** 2)).mean()


def dsm_loss(
    denoiser: Denoiser, sde: VESDE, x0: Tensor, cond: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """The training loss that matches ``denoiser.parameterization`` (a scalar)."""
    if denoiser.parameterization == "paper":
        return paper_dsm_loss(denoiser, sde, x0, cond, generator)
    if denoiser.parameterization == "preconditioned":
        return preconditioned_dsm_loss(denoiser, sde, x0, cond, generator)
    raise ValueError(f"no loss for parameterization {denoiser.parameterization!r}")
