"""Two ways to turn the U-Net into the conditional score, behind one sigma-denoiser interface.

Every sampler and loss sees a :class:`Denoiser` D(x, sigma, y) and the score it implies,
s(x, y, sigma) = (D - x) / sigma^2 (Tweedie). ``paper`` is score-SDE's parameterization (network output / sigma);
``preconditioned`` is EDM's (Karras et al. 2022) c_skip, c_out, c_in, c_noise around the same network.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from bids_jdam.config import SDEConfig

PARAMETERIZATIONS = ("paper", "preconditioned")


def _per_item(sigma: Tensor, like: Tensor) -> Tensor:
    """Broadcast a [B] noise level over the image dimensions of ``like``."""
    return sigma.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class Denoiser(nn.Module, abc.ABC):
    """D(x, sigma, cond) ~ E[x0 | x, y]; ``parameterization`` names the training recipe (see losses.dsm_loss).

    A "preconditioned" denoiser also carries ``sigma_data``, which sets EDM's loss weight.
    """

    parameterization: str

    @abc.abstractmethod
    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        """x: [B, 1, H, W] noisy PET, sigma: [B], cond: [B, 1, H, W] MRI or None."""

    def score(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        """grad_x log p_sigma(x | y) = (D(x, sigma, y) - x) / sigma^2."""
        return (self(x, sigma, cond) - x) / _per_item(sigma, x) ** 2


class NetworkDenoiser(Denoiser):
    """A denoiser around a score U-Net ``net(x, noise_label)`` with a ``conditional`` flag; feeds [x, y] or x alone.

    Any module of that shape will do (``bids_jdam.models.unet.ScoreUNet`` is the app's).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def network(self, x: Tensor, noise_label: Tensor, cond: Tensor | None) -> Tensor:
        """The raw U-Net output for input x (already scaled by the subclass) and the MRI slice ``cond``."""
        if not self.net.conditional:
            return self.net(x, noise_label)
        if cond is None:
            raise ValueError("this model is conditional: it needs the MRI slice as cond")
        return self.net(torch.cat([x, cond.to(x.dtype)], dim=1), noise_label)


class PaperScore(NetworkDenoiser):
    """score-SDE / JDAM: s(x, y, sigma) = F(x, y, log sigma) / sigma, hence D = x + sigma F."""

    parameterization = "paper"

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        return x + _per_item(sigma, x) * self.network(x, sigma.log(), cond)

    def score(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        """Computed directly (not through D) to avoid cancellation in (D - x) at large sigma."""
        return self.network(x, sigma.log(), cond) / _per_item(sigma, x)


class PreconditionedDenoiser(NetworkDenoiser):
    """EDM: D = c_skip x + c_out F(c_in x, y, c_noise), scaled so the network's input and target have unit variance."""

    parameterization = "preconditioned"

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__(net)
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        s = _per_item(sigma, x)
        total_variance = s**2 + self.sigma_data**2
        c_skip = self.sigma_data**2 / total_variance
        c_out = s * self.sigma_data / total_variance.sqrt()
        c_in = 1 / total_variance.sqrt()
        c_noise = sigma.log() / 4
        return c_skip * x + c_out * self.network(c_in * x, c_noise, cond)


def build_denoiser(net: nn.Module, sde_cfg: SDEConfig) -> Denoiser:
    """The denoiser named by ``sde_cfg.parameterization`` around ``net``."""
    if sde_cfg.parameterization == "paper":
        return PaperScore(net)
    if sde_cfg.parameterization == "preconditioned":
        return PreconditionedDenoiser(net, sde_cfg.sigma_data)
    raise ValueError(f"unknown parameterization {sde_cfg.parameterization!r}; expected one of {PARAMETERIZATIONS}")
