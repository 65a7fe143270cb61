"""The supervised baseline: the same-size U-Net as a plain L1 regression MRI -> PET (one deterministic guess)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.diffusion.losses import NoiseSource
from bids_jdam.methods.registry import METHODS, Method, SliceKey
from bids_jdam.models.unet import ScoreUNet


class L1UNet(Method):
    """JDAM's U-Net with the MRI as its only input and a constant noise label, trained to minimise |U(y) - x|."""

    name = "unet-l1"
    summary = "the same-size U-Net as an L1 regression (the supervised baseline)"
    has_regression_mean = True

    def build_network(self, cfg: JDAMConfig) -> nn.Module:
        return ScoreUNet(dataclasses.replace(cfg.network, conditional=False), cfg.grid.slice_size)

    def loss(
        self, model: nn.Module, cfg: JDAMConfig, pet: torch.Tensor, mri: torch.Tensor, generator: NoiseSource, step: int
    ) -> torch.Tensor:
        return (model(mri, torch.zeros(len(mri), device=mri.device)) - pet).abs().mean()

    def predict(
        self,
        model: Any,
        cfg: JDAMConfig,
        mri: torch.Tensor,
        keys: list[SliceKey],
        sampler: SamplerConfig,
        device: torch.device,
    ) -> torch.Tensor:
        return self.regression_mean(model, mri, device)

    def regression_mean(self, model: Any, mri: torch.Tensor, device: torch.device) -> torch.Tensor:
        mri = mri.to(device)
        return model(mri, torch.zeros(len(mri), device=device))


METHODS.register(L1UNet())
