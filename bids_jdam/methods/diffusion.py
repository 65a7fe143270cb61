"""JDAM, the paper's method (a VE-SDE score model of the PET given the MRI), and its unconditional ablation.

The network's output becomes the score by ``cfg.sde.parameterization``: ``paper`` (score-SDE's, output / sigma,
the faithful reproduction) or ``preconditioned`` (EDM's denoiser; the default). Each trains with the matching
denoising score-matching loss and samples with the configured sampler, one noise stream per slice key.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.diffusion.losses import NoiseSource, dsm_loss
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.samplers import network_evaluations, sample
from bids_jdam.diffusion.sde import VESDE, sigma_max_from_data
from bids_jdam.methods.registry import METHODS, Method, SliceKey
from bids_jdam.models.unet import ScoreUNet

log = logging.getLogger(__name__)

# Slices used to pick sigma_max by score-SDE's rule (largest distance between training images); more adds cost only.
SIGMA_MAX_SLICES = 2048


def sde_of(cfg: JDAMConfig) -> VESDE:
    return VESDE(cfg.sde.sigma_min, cfg.sde.sigma_max)


class JDAM(Method):
    """s(x_t, y, t): a U-Net on [x_t, y] trained by denoising score matching; posterior samples by a sampler."""

    name = "jdam"
    summary = "score diffusion of the PET given the MRI (the paper's method)"
    probabilistic = True

    def prepare(self, cfg: JDAMConfig, training: PairedSliceDataset, from_data: bool) -> JDAMConfig:
        """sigma_max by score-SDE's rule on the training PET slices (the largest distance between them)."""
        if not from_data:
            return cfg
        cfg = JDAMConfig.from_dict(cfg.to_dict())
        generator = torch.Generator().manual_seed(cfg.train.seed)
        count = min(len(training), SIGMA_MAX_SLICES)
        items = torch.randperm(len(training), generator=generator)[:count]
        cfg.sde.sigma_max = float(sigma_max_from_data(training.stacked(items)[0]))
        log.info("sigma_max = %.3f (largest distance between %d training slices)", cfg.sde.sigma_max, count)
        return cfg

    def build_network(self, cfg: JDAMConfig) -> nn.Module:
        return ScoreUNet(cfg.network, cfg.grid.slice_size)

    def as_model(self, net: nn.Module, cfg: JDAMConfig) -> nn.Module:
        return build_denoiser(net, cfg.sde)

    def loss(
        self, model: nn.Module, cfg: JDAMConfig, pet: torch.Tensor, mri: torch.Tensor, generator: NoiseSource, step: int
    ) -> torch.Tensor:
        cond = mri if cfg.network.conditional else None
        return dsm_loss(model, sde_of(cfg), pet, cond, generator=generator, settings=cfg.loss)

    def predict(
        self,
        model: Any,
        cfg: JDAMConfig,
        mri: torch.Tensor,
        keys: list[SliceKey],
        sampler: SamplerConfig,
        device: torch.device,
    ) -> torch.Tensor:
        cond = mri if cfg.network.conditional else None
        return sample(model, cond, tuple(mri.shape), sampler, sde_of(cfg), keys, device=device)

    def network_evaluations(self, sampler: SamplerConfig) -> int:
        return network_evaluations(sampler.name, sampler.steps, sampler.corrector_steps)

    def card_fields(self, cfg: JDAMConfig) -> dict[str, Any]:
        return {"parameterization": cfg.sde.parameterization}


class UnconditionalSDE(JDAM):
    """The paper's ablation: the same score model without the MRI channel (PET-like images, not this brain's)."""

    name = "sde-unconditional"
    summary = "the same score diffusion without the MRI input (the paper's ablation)"

    def configure(self, cfg: JDAMConfig) -> JDAMConfig:
        cfg = super().configure(cfg)
        cfg.network = dataclasses.replace(cfg.network, conditional=False)
        return cfg


METHODS.register(JDAM())
METHODS.register(UnconditionalSDE())
