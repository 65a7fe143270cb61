"""The variance-exploding SDE of the paper: dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw on the PET only.

sigma(t) = sigma_min (sigma_max / sigma_min)^t for t in (0, 1]; the perturbation kernel is N(x0, sigma(t)^2 I)
and the prior is N(0, sigma_max^2 I). The MRI is never perturbed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Rows of the pairwise-distance matrix computed at once by sigma_max_from_data (bounds memory, not the result).
DISTANCE_CHUNK_ROWS = 1024


class VESDE:
    """Noise schedule, perturbation kernel and discretisation of the VE-SDE (score-SDE, Song et al. 2021)."""

    def __init__(self, sigma_min: float, sigma_max: float):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VE-SDE needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t) = sqrt(d sigma^2 / dt) = sigma(t) sqrt(2 log(sigma_max / sigma_min)); the drift is zero."""
        return self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of p_0t(x_t | x_0) = N(x_0, sigma(t)^2 I); std has shape [B]."""
        return x0, self.sigma(t)

    def prior_sampling(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, sigma_max^2 I), the prior the reverse process starts from (not N(0, I))."""
        return torch.randn(shape, generator=generator) * self.sigma_max

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """SMLD Markov chain step (paper eq. 1) from t - dt to t: drift f = 0, G = sqrt(sigma(t)^2 - sigma(t-dt)^2)."""
        drift = torch.zeros_like(x)
        noise_scale = torch.sqrt(self.sigma(t) ** 2 - self.sigma(t - dt) ** 2)
        return drift, noise_scale

    def sigmas(self, n: int) -> Tensor:
        """n noise levels, geometric from sigma_max down to sigma_min (the paper's {sigma_i}, largest first)."""
        return torch.exp(torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), n, dtype=torch.float64))


def sigma_max_from_data(images: Tensor) -> float:
    """Score-SDE's rule for sigma_max: the largest Euclidean distance between any two training images.

    With sigma_max at least this large, the prior N(0, sigma_max^2 I) covers the whole data set, so the reverse
    process can reach every training image. ``images`` is [N, ...]; exact, in double precision, in chunks of rows
    (so that memory does not grow with N).
    """
    if images.shape[0] < 2:
        raise ValueError(f"sigma_max_from_data needs at least 2 images, got {images.shape[0]}")
    flat = images.reshape(images.shape[0], -1)
    largest = 0.0
    for start in range(0, flat.shape[0], DISTANCE_CHUNK_ROWS):
        rows = flat[start : start + DISTANCE_CHUNK_ROWS].double()
        for other in range(start, flat.shape[0], DISTANCE_CHUNK_ROWS):  # each pair of chunks once, in double
            distances = torch.cdist(rows, flat[other : other + DISTANCE_CHUNK_ROWS].double())
            largest = max(largest, float(distances.max()))
    return largest
