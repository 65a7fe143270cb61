"""Training loop of the CycleGAN baseline: LSGAN, cycle and identity losses on unpaired MRI and PET slices.

CycleGAN is the paper's unpaired baseline, so each step draws its MRI batch and its PET batch from two independent
shuffles of the training subjects' slices: the pairing the data has is never used. Batches are a pure function of
(seed, step), each image pool carries its own generator, and every tensor of the run goes into the checkpoint, so a
resumed run on CPU continues bit for bit. The model directory keeps only the MRI->PET generator.

Adam runs at a constant rate: CycleGAN's linear decay over the second half of training needs a known number of
steps, which a time budget does not give.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from bids_jdam.config import JDAMConfig
from bids_jdam.data.dataset import PairedSliceDataset, SubjectVolumes
from bids_jdam.models.cyclegan import (
    CycleGAN,
    CycleGANConfig,
    ImagePool,
    ResnetGenerator,
    cyclegan_config_from_dict,
    cyclegan_translate,
    paper_cyclegan_config,
    small_cyclegan_config,
    to_unit_range,
)
from bids_jdam.models.model_dir import load_checkpoint, save_checkpoint, save_model_dir
from bids_jdam.workflows.train import evaluate_slices, validation_slices

log = logging.getLogger(__name__)

METHOD = "cyclegan"
SMALL_SLICE_SIZE = 64


def default_cyclegan_config(slice_size: int) -> CycleGANConfig:
    """The CPU-small preset for 64x64 slices (or smaller), CycleGAN's published sizes above."""
    return small_cyclegan_config() if slice_size <= SMALL_SLICE_SIZE else paper_cyclegan_config()


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


def _translate_slices(generator: ResnetGenerator, mri: Tensor, batch_size: int = 64) -> Tensor:
    """:func:`cyclegan_translate` in batches, returned on the CPU."""
    return torch.cat([cyclegan_translate(generator, chunk).cpu() for chunk in mri.split(batch_size)])


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    return {
        f"{prefix}.{param_id}.{key}": value
        for param_id, state in optimizer.state_dict()["state"].items()
        for key, value in state.items()
    }


def _load_optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = defaultdict(dict)
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            param_id, key = name[len(prefix) + 1 :].split(".", 1)
            state[int(param_id)][key] = value
    optimizer.load_state_dict({"state": dict(state), "param_groups": optimizer.state_dict()["param_groups"]})


class CycleGANTrainer:
    """One CycleGAN run's state (four networks, two Adams, two image pools) and its training step.

    Same shape as :class:`bids_jdam.workflows.train.Trainer` (``train_step``, ``step``, ``train_seconds``,
    ``checkpoint``/``restore``) so that benchmarks can drive every method alike.
    """

    def __init__(
        self, cyclegan: CycleGANConfig, dataset: PairedSliceDataset, device: torch.device | str = "cpu", seed: int = 0
    ):
        self.cyclegan, self.dataset, self.device, self.seed = cyclegan, dataset, torch.device(device), seed
        torch.manual_seed(seed)
        self.model = CycleGAN(cyclegan).to(self.device)
        betas = (cyclegan.beta1, cyclegan.beta2)
        self.generator_optimizer = torch.optim.Adam(
            [*self.model.mri_to_pet.parameters(), *self.model.pet_to_mri.parameters()], lr=cyclegan.lr, betas=betas
        )
        self.discriminator_optimizer = torch.optim.Adam(
            [*self.model.pet_discriminator.parameters(), *self.model.mri_discriminator.parameters()],
            lr=cyclegan.lr,
            betas=betas,
        )
        self.pools = {"pet": ImagePool(cyclegan.pool_size, seed), "mri": ImagePool(cyclegan.pool_size, seed + 1)}
        self.step = 0
        self.train_seconds = 0.0
        self.last_losses: dict[str, float] = {}

    @property
    def generator(self) -> ResnetGenerator:
        """The MRI->PET generator: the model this method delivers."""
        return self.model.mri_to_pet

    def train_step(self) -> float:
        """One update on an unpaired batch; returns the generator loss (all losses in ``last_losses``)."""
        start = time.perf_counter()
        self.model.train()
        mri_items, pet_items = unpaired_indices(len(self.dataset), self.cyclegan.batch_size, self.seed, self.step)
        mri = self.dataset.stacked(mri_items)[1].to(self.device)
        pet = self.dataset.stacked(pet_items)[0].to(self.device)
        self.last_losses = cyclegan_update(
            self.model, self.generator_optimizer, self.discriminator_optimizer, self.pools, mri, pet, self.cyclegan
        )
        self.step += 1
        self.train_seconds += time.perf_counter() - start
        return self.last_losses["generator"]

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor of the run (weights, Adam moments, pooled images, pool generators) and the JSON-able rest."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= _optimizer_tensors("generator_optimizer", self.generator_optimizer)
        tensors |= _optimizer_tensors("discriminator_optimizer", self.discriminator_optimizer)
        for domain, pool in self.pools.items():
            tensors |= {f"pool_{domain}.{key}": value for key, value in pool.state_tensors().items()}
        state = {
            "method": METHOD,
            "cyclegan": dataclasses.asdict(self.cyclegan),
            "seed": self.seed,
            "train_seconds": self.train_seconds,
        }
        return tensors, state

    def restore(self, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`checkpoint` left off."""
        self.model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizer_tensors("generator_optimizer", self.generator_optimizer, tensors)
        _load_optimizer_tensors("discriminator_optimizer", self.discriminator_optimizer, tensors)
        for domain, pool in self.pools.items():
            prefix = f"pool_{domain}."
            pool.load_state_tensors(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, self.device
            )
        self.step = state["step"]
        self.train_seconds = state["train_seconds"]


def train_cyclegan(
    train_dataset: PairedSliceDataset,
    val_volumes: list[SubjectVolumes],
    cfg: JDAMConfig,
    out_dir: Path,
    *,
    cyclegan: CycleGANConfig | None = None,
    max_steps: int | None = None,
    minutes: float | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    resume: bool = False,
    checkpoint_dir: Path | None = None,
    card: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Train CycleGAN on ``train_dataset`` and write the MRI->PET generator as the model directory ``out_dir``.

    Stops at ``max_steps`` (total, counting resumed steps; default ``cfg.train.max_steps``) or after ``minutes`` of
    training in this call, whichever comes first. Every ``cfg.train.checkpoint_every`` steps a checkpoint goes to
    ``checkpoint_dir`` (default ``out_dir/checkpoints``) and the held-out metrics (the same slices and protocol as
    the other methods' validation) are added to the learning curve. With ``resume`` the newest checkpoint's
    CycleGAN sizes and state are used. ``card`` adds fields to the model card (``trained_on`` among them); the
    card also records the CycleGAN sizes under ``"cyclegan"``, which :func:`generator_from_card` reads back.
    """
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    checkpoint = load_checkpoint(checkpoint_dir) if resume else None
    if checkpoint is not None:
        cyclegan = cyclegan_config_from_dict(checkpoint[1]["cyclegan"])
    cyclegan = cyclegan or default_cyclegan_config(cfg.grid.slice_size)
    steps = max_steps if max_steps is not None else cfg.train.max_steps
    held_out = validation_slices(val_volumes, cfg) if val_volumes else None

    trainer = CycleGANTrainer(cyclegan, train_dataset, device, seed)
    curve: list[dict[str, Any]] = []
    if checkpoint is not None:
        trainer.restore(*checkpoint)
        curve = checkpoint[1]["learning_curve"]
        log.info("resumed CycleGAN training at step %d", trainer.step)

    def save() -> None:
        tensors, state = trainer.checkpoint()
        state |= {"config": cfg.to_dict(), "learning_curve": curve}
        save_checkpoint(checkpoint_dir, trainer.step, tensors, state)

    def record() -> None:
        entry: dict[str, Any] = {
            "step": trainer.step, "train_seconds": round(trainer.train_seconds, 3), "losses": trainer.last_losses
        }
        if held_out is not None:
            metrics = evaluate_slices(_translate_slices(trainer.generator, held_out.mri), held_out)
            entry["validation"] = {k: v for k, v in metrics.items() if k != "per_subject"}
        curve.append(entry)

    deadline = time.perf_counter() + minutes * 60 if minutes is not None else math.inf
    bar = tqdm(total=steps, initial=trainer.step, desc=f"training {METHOD}", unit="step", disable=not progress)
    while trainer.step < steps and time.perf_counter() < deadline:
        trainer.train_step()
        losses = trainer.last_losses
        bar.set_postfix(generator=f"{losses['generator']:.3f}", cycle=f"{losses['cycle']:.3f}")
        bar.update(1)
        if trainer.step % cfg.train.checkpoint_every == 0:
            record()
            save()
    bar.close()
    if trainer.last_losses and trainer.step % cfg.train.checkpoint_every != 0:
        record()
        save()

    validation: dict[str, Any] = {"note": "no held-out subjects"}
    if held_out is not None:
        validation = evaluate_slices(_translate_slices(trainer.generator, held_out.mri), held_out)
        log.info("validation: PSNR %.2f dB, SSIM %.3f", validation["psnr_db"], validation["ssim"])
    model_card = {
        "trained_on": "unspecified",
        **(card or {}),
        "cyclegan": dataclasses.asdict(cyclegan),
        "unpaired": True,
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 1),
        "seed": seed,
        "device": str(trainer.device),
        "validation": validation,
        "learning_curve": curve,
    }
    return save_model_dir(out_dir, trainer.generator, cfg, METHOD, model_card)
