"""The paper's unpaired baseline: CycleGAN, of which the model directory keeps the MRI->PET generator."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.methods.registry import METHODS, Method, SliceKey
from bids_jdam.models.cyclegan import cyclegan_translate, mri_to_pet_generator
from bids_jdam.training.cyclegan import CycleGANTrainer
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.trainer import Trainer


class CycleGANMethod(Method):
    """LSGAN + cycle + identity losses on unpaired slices; predicts with one pass of the MRI->PET generator."""

    name = "cyclegan"
    summary = "the paper's unpaired CycleGAN baseline"

    def build_network(self, cfg: JDAMConfig) -> nn.Module:
        return mri_to_pet_generator(cfg.cyclegan)

    def batch_size(self, cfg: JDAMConfig) -> int:
        return cfg.cyclegan.batch_size

    def trainer(
        self, cfg: JDAMConfig, dataset: PairedSliceDataset, device: torch.device, seed: int, ranks: Ranks
    ) -> Trainer:
        return CycleGANTrainer(self.name, cfg, dataset, device, seed, ranks)

    def predict(
        self,
        model: Any,
        cfg: JDAMConfig,
        mri: torch.Tensor,
        keys: list[SliceKey],
        sampler: SamplerConfig,
        device: torch.device,
    ) -> torch.Tensor:
        generator = getattr(model, "module", model)  # the synthesis entry point wraps the model
        return cyclegan_translate(generator, mri.to(device))

    def card_fields(self, cfg: JDAMConfig) -> dict[str, Any]:
        return {"unpaired": True}

    def stored_config(self, config: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
        """Model directories before bids-jdam kept CycleGAN's sizes in the typed config had them in the card."""
        if "cyclegan" not in config and isinstance(card.get("cyclegan"), dict):
            return {**config, "cyclegan": card["cyclegan"]}
        return config


METHODS.register(CycleGANMethod())
