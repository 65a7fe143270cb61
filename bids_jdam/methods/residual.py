"""Residual JDAM: a regression U-Net predicts the mean PET, a score diffusion model generates what it misses.

As in CorrDiff (Mardani et al., 2023), x = mu(y) + r: ``mu`` is the L1 U-Net of the MRI, and the VE-SDE runs on the
residual r = x - mu(y) only, conditioned on [y, mu(y)] (the MRI stays fixed). The K-sample mean is meant to be as
accurate as the regression (in equal budgets it is still a little behind: benchmarks/results/quality-default-*.md),
and the samples' spread to describe what the regression cannot know. Both networks are
one module, trained together, so one budget and one checkpoint cover the method: each step is one L1 step of mu,
and every ``residual_score_every``-th step (the third, by default) also a denoising score-matching step on the
residual of the current, detached mu. Each network's gradient is clipped by its own norm, so mu's training is the
``unet-l1`` method's, step for step, from the same initialization.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from bids_jdam.config import JDAMConfig, SamplerConfig, SDEConfig
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.diffusion.losses import NoiseSource, dsm_loss
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.samplers import sample
from bids_jdam.methods.diffusion import JDAM, sde_of
from bids_jdam.methods.registry import METHODS, SliceKey
from bids_jdam.models.unet import ScoreUNet

# The residual of a regression is about a fifth of the PET's spread (measured on phantoms: ~0.1 SUVR vs 0.5),
# so EDM's preconditioning is set for that scale.
RESIDUAL_SIGMA_DATA = 0.1
# The method's sampler where the configuration names none other than the paper's PC-1000: the one its quality
# benchmark measures, and cheap enough (36 evaluations per slice) that training calibrates the spread for it.
RESIDUAL_SAMPLER = SamplerConfig(name="heun", steps=18, corrector_steps=0)


class ResidualNetworks(nn.Module):
    """The stored module: ``mean`` (MRI -> PET, L1) and ``score`` (U-Net on [r_t, y, mu]).

    The residual is a simpler signal than the PET, so its score network is narrower (``residual_score_width``,
    a quarter by default) and trains on a third of the steps: the mean network then gets most of the U-Net's steps
    in the same CPU budget (benchmarks/results/quality-default-*.md).
    """

    def __init__(self, cfg: JDAMConfig):
        super().__init__()
        self.mean = ScoreUNet(dataclasses.replace(cfg.network, conditional=False), cfg.grid.slice_size)
        width = max(cfg.network.num_groups, round(cfg.network.channels * cfg.network.residual_score_width))
        width -= width % cfg.network.num_groups  # group normalization needs whole groups
        score = dataclasses.replace(cfg.network, conditional=True, channels=width)
        self.score = ScoreUNet(score, cfg.grid.slice_size, condition_channels=2)


class ResidualModel(nn.Module):
    """mu(y) and the residual denoiser D(r, sigma, [y, mu]); calling it is the denoiser, as the samplers expect."""

    def __init__(self, networks: nn.Module, cfg: JDAMConfig):
        super().__init__()
        self.networks = networks
        self.denoiser = build_denoiser(_ScoreOnly(networks), cfg.sde)

    def mean(self, mri: Tensor) -> Tensor:
        return self.networks.mean(mri, torch.zeros(len(mri), device=mri.device))

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        return self.denoiser(x, sigma, cond)


class _ScoreOnly(nn.Module):
    """The score U-Net of :class:`ResidualNetworks` seen as a plain conditional U-Net by the denoiser."""

    conditional = True

    def __init__(self, networks: nn.Module):
        super().__init__()
        self.networks = networks

    def forward(self, x: Tensor, noise_label: Tensor) -> Tensor:
        return self.networks.score(x, noise_label)


class ResidualJDAM(JDAM):
    """JDAM on the residual of the L1 U-Net: the regression's accuracy, the diffusion's uncertainty."""

    name = "jdam-residual"
    summary = "an L1 U-Net for the mean and score diffusion of its residual (CorrDiff-style)"
    condition_channels = 2  # [y, mu(y)]
    has_regression_mean = True

    def configure(self, cfg: JDAMConfig) -> JDAMConfig:
        """EDM's preconditioning and noise-level distribution rescaled from the PET's spread to the residual's, and
        the method's own sampler unless the configuration chose one."""
        cfg = super().configure(cfg)
        if cfg.train.residual_score_every < 1:
            raise ValueError(f"train.residual_score_every must be at least 1, got {cfg.train.residual_score_every}")
        paper = SamplerConfig()
        if (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.corrector_steps) == (
            paper.name,
            paper.steps,
            paper.corrector_steps,
        ):
            cfg.sampler = dataclasses.replace(
                cfg.sampler,
                name=RESIDUAL_SAMPLER.name,
                steps=RESIDUAL_SAMPLER.steps,
                corrector_steps=RESIDUAL_SAMPLER.corrector_steps,
            )
        cfg.loss.p_mean += math.log(RESIDUAL_SIGMA_DATA / cfg.sde.sigma_data)
        cfg.sde.sigma_data = RESIDUAL_SIGMA_DATA
        return cfg

    def prepare(self, cfg: JDAMConfig, training: PairedSliceDataset, from_data: bool) -> JDAMConfig:
        """score-SDE's sigma_max rule on the PET, scaled down as the residual is smaller than the PET."""
        cfg = super().prepare(cfg, training, from_data)
        if from_data:
            cfg.sde.sigma_max *= RESIDUAL_SIGMA_DATA / SDEConfig.sigma_data  # the PET's own spread
        return cfg

    def build_network(self, cfg: JDAMConfig) -> nn.Module:
        return ResidualNetworks(cfg)

    def as_model(self, net: nn.Module, cfg: JDAMConfig) -> nn.Module:
        return ResidualModel(net, cfg)

    def gradient_groups(self, net: nn.Module) -> list[list[nn.Parameter]]:
        """Each network clipped by its own gradient norm: the score-matching gradients never shrink the mean
        network's step, so it trains step for step as the ``unet-l1`` method does."""
        return [list(net.mean.parameters()), list(net.score.parameters())]

    def loss(
        self, model: nn.Module, cfg: JDAMConfig, pet: Tensor, mri: Tensor, generator: NoiseSource, step: int
    ) -> Tensor:
        """mu's L1 loss every step; the residual's score matching added on every ``residual_score_every``-th."""
        mean = model.mean(mri)
        regression = (mean - pet).abs().mean()
        if step % cfg.train.residual_score_every:
            return regression
        mean = mean.detach()
        diffusion = dsm_loss(
            model.denoiser,
            sde_of(cfg),
            pet - mean,
            torch.cat([mri, mean], dim=1),
            generator=generator,
            settings=cfg.loss,
        )
        return regression + diffusion

    def predict(
        self,
        model: Any,
        cfg: JDAMConfig,
        mri: Tensor,
        keys: list[SliceKey],
        sampler: SamplerConfig,
        device: torch.device,
    ) -> Tensor:
        mri = mri.to(device)
        mean = self.regression_mean(model, mri, device)
        residual = sample(
            model, torch.cat([mri, mean], dim=1), tuple(mri.shape), sampler, sde_of(cfg), keys, device=device
        )
        return mean + residual

    def regression_mean(self, model: Any, mri: Tensor, device: torch.device) -> Tensor:
        """mu(y), the L1 U-Net's prediction the residual is sampled around."""
        residual_model = getattr(model, "module", model)  # the synthesis entry point wraps the model
        with torch.inference_mode():
            return residual_model.mean(mri.to(device)).float()

    def network_evaluations(self, sampler: SamplerConfig) -> int:
        return super().network_evaluations(sampler) + 1  # the mean network once

    def card_fields(self, cfg: JDAMConfig) -> dict[str, Any]:
        return {"parameterization": cfg.sde.parameterization, "mean_model": "unet-l1", "residual_diffusion": True}


METHODS.register(ResidualJDAM())
