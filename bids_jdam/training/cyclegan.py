"""CycleGAN's training step: LSGAN, cycle and identity losses on unpaired MRI and PET slices.

CycleGAN is the paper's unpaired baseline, so each step draws its MRI batch and its PET batch from two independent
shuffles of the training subjects' slices: the pairing the data has is never used. Batches are a pure function of
(seed, step), each image pool carries its own generator, and every tensor of the run goes into the checkpoint, so a
resumed run on CPU continues bit for bit. The model directory keeps only the MRI->PET generator. Under torchrun each
rank trains on its part of both global batches, the ranks average their gradients before each Adam step, and each
keeps its own image pools.

Adam runs at a constant rate: CycleGAN's linear decay over the second half of training needs a known number of
steps, which a time budget does not give.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bids_jdam.config import CycleGANConfig, JDAMConfig
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.models.cyclegan import CycleGAN, ImagePool, ResnetGenerator, to_unit_range
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.optimizer_state import load_optimizer_tensors, optimizer_tensors
from bids_jdam.training.trainer import Trainer

log = logging.getLogger(__name__)


def unpaired_indices(n_slices: int, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset positions of step ``step``'s MRI batch and PET batch, from independent per-epoch shuffles."""
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, n_slices)
    sides = []
    for side in (0, 1):
        permutations = {e: np.random.default_rng([seed, int(e), side]).permutation(n_slices) for e in set(epochs)}
        sides.append(np.array([permutations[e][o] for e, o in zip(epochs, offsets)]))
    return sides[0], sides[1]


def lsgan_loss(scores: Tensor, real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al.): squared distance of the patch scores to 1 (real) or 0 (fake)."""
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def identity_loss(generator: nn.Module, target_images: Tensor) -> Tensor:
    """L1 between target-domain images and the generator applied to them (it should leave them unchanged)."""
    return F.l1_loss(generator(target_images), target_images)


def _set_requires_grad(modules: tuple[nn.Module, ...], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


def cyclegan_update(
    model: CycleGAN,
    generator_optimizer: torch.optim.Optimizer,
    discriminator_optimizer: torch.optim.Optimizer,
    pools: dict[str, ImagePool],
    mri: Tensor,
    pet: Tensor,
    cfg: CycleGANConfig,
    ranks: Ranks = Ranks(),
) -> dict[str, float]:
    """One CycleGAN update (generators, then discriminators on pooled fakes) on model-unit batches."""
    mri = to_unit_range(mri, model.mri_to_pet.source_range)
    pet = to_unit_range(pet, model.mri_to_pet.target_range)
    discriminators = (model.pet_discriminator, model.mri_discriminator)

    _set_requires_grad(discriminators, False)
    fake_pet = model.mri_to_pet(mri)
    fake_mri = model.pet_to_mri(pet)
    adversarial = lsgan_loss(model.pet_discriminator(fake_pet), True) + lsgan_loss(
        model.mri_discriminator(fake_mri), True
    )
    cycle = F.l1_loss(model.pet_to_mri(fake_pet), mri) + F.l1_loss(model.mri_to_pet(fake_mri), pet)
    identity = torch.zeros(())
    if cfg.lambda_identity > 0:
        identity = identity_loss(model.mri_to_pet, pet) + identity_loss(model.pet_to_mri, mri)
    generator_loss = adversarial + cfg.lambda_cycle * cycle + cfg.lambda_identity * identity
    generator_optimizer.zero_grad(set_to_none=True)
    generator_loss.backward()
    ranks.average_gradients(p for group in generator_optimizer.param_groups for p in group["params"])
    generator_optimizer.step()

    _set_requires_grad(discriminators, True)
    pooled_pet = pools["pet"].query(fake_pet)
    pooled_mri = pools["mri"].query(fake_mri)
    discriminator_pet = 0.5 * (
        lsgan_loss(model.pet_discriminator(pet), True) + lsgan_loss(model.pet_discriminator(pooled_pet), False)
    )
    discriminator_mri = 0.5 * (
        lsgan_loss(model.mri_discriminator(mri), True) + lsgan_loss(model.mri_discriminator(pooled_mri), False)
    )
    discriminator_optimizer.zero_grad(set_to_none=True)
    (discriminator_pet + discriminator_mri).backward()
    ranks.average_gradients(p for group in discriminator_optimizer.param_groups for p in group["params"])
    discriminator_optimizer.step()
    losses = {
        "generator": generator_loss,
        "adversarial": adversarial,
        "cycle": cycle,
        "identity": identity,
        "discriminator_pet": discriminator_pet,
        "discriminator_mri": discriminator_mri,
    }
    return {name: float(value.detach()) for name, value in losses.items()}


class CycleGANTrainer(Trainer):
    """One CycleGAN run's state (four networks, two Adams, two image pools) and its training step."""

    def __init__(
        self,
        method_name: str,
        cfg: JDAMConfig,
        dataset: PairedSliceDataset,
        device: torch.device | str = "cpu",
        seed: int = 0,
        ranks: Ranks = Ranks(),
    ):
        super().__init__(method_name, cfg, torch.device(device))
        self.cyclegan, self.dataset, self.seed, self.ranks = cfg.cyclegan, dataset, seed, ranks
        torch.manual_seed(seed)
        self.model = CycleGAN(self.cyclegan).to(self.device)
        ranks.broadcast(self.model)
        betas = (self.cyclegan.beta1, self.cyclegan.beta2)
        self.generator_optimizer = torch.optim.Adam(
            [*self.model.mri_to_pet.parameters(), *self.model.pet_to_mri.parameters()], lr=self.cyclegan.lr, betas=betas
        )
        self.discriminator_optimizer = torch.optim.Adam(
            [*self.model.pet_discriminator.parameters(), *self.model.mri_discriminator.parameters()],
            lr=self.cyclegan.lr,
            betas=betas,
        )
        pool_seed = seed + 2 * ranks.rank
        self.pools = {
            "pet": ImagePool(self.cyclegan.pool_size, pool_seed),
            "mri": ImagePool(self.cyclegan.pool_size, pool_seed + 1),
        }
        self.last_losses: dict[str, float] = {}

    @property
    def batch_size(self) -> int:
        """Slices per step and domain (the MRI batch and the PET batch are drawn independently)."""
        return self.cyclegan.batch_size

    @property
    def generator(self) -> ResnetGenerator:
        """The MRI->PET generator: the model this method delivers."""
        return self.model.mri_to_pet

    def update(self) -> float:
        """One update on an unpaired batch; returns the generator loss (all losses in ``last_losses``)."""
        self.model.train()
        mri_items, pet_items = unpaired_indices(len(self.dataset), self.cyclegan.batch_size, self.seed, self.step)
        mri = self.dataset.stacked(self.ranks.shard(torch.from_numpy(mri_items)))[1].to(self.device)
        pet = self.dataset.stacked(self.ranks.shard(torch.from_numpy(pet_items)))[0].to(self.device)
        self.last_losses = cyclegan_update(
            self.model,
            self.generator_optimizer,
            self.discriminator_optimizer,
            self.pools,
            mri,
            pet,
            self.cyclegan,
            self.ranks,
        )
        return self.last_losses["generator"]

    def delivered(self) -> nn.Module:
        return self.generator

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor of the run (weights, Adam moments, every rank's pooled images and pool generators) and the
        JSON-able rest (gathered: call it on every rank)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        rest: dict[str, Any] = {"seed": self.seed, "world_size": self.ranks.world_size}
        for name in ("generator_optimizer", "discriminator_optimizer"):
            adam, rest[name] = optimizer_tensors(name, getattr(self, name))
            tensors |= adam
        pools = {
            f"{domain}.{key}": value
            for domain, pool in self.pools.items()
            for key, value in pool.state_tensors().items()
        }
        for rank, rank_pools in enumerate(self.ranks.gather(pools)):
            tensors |= {self._pool_prefix(rank) + name: value for name, value in rank_pools.items()}
        return tensors, rest

    @staticmethod
    def _pool_prefix(rank: int) -> str:
        """Rank 0 keeps the single-process names (``pool_pet.images``), rank r uses ``rank{r}.pool_pet.images``."""
        return "pool_" if rank == 0 else f"rank{rank}.pool_"

    def load_state(self, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        self.model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        for name in ("generator_optimizer", "discriminator_optimizer"):
            load_optimizer_tensors(name, getattr(self, name), tensors, state[name])
        if not any(k.startswith(self._pool_prefix(self.ranks.rank)) for k in tensors):
            log.warning(
                "rank %d: the checkpoint has no image pools for this rank (it was written by %d processes); "
                "its pools start empty",
                self.ranks.rank,
                state.get("world_size", 1),
            )
            return
        for domain, pool in self.pools.items():
            prefix = f"{self._pool_prefix(self.ranks.rank)}{domain}."
            pool.load_state_tensors(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, self.device
            )
