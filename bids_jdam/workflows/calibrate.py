"""Calibrate an existing model directory on held-out subjects it was not trained on.

Two calibrations: the posterior spread (the SD maps; probabilistic methods only) and the regional interval (the
regional tables; every method, for the synthesis a default participant run makes). Training fits both on its
validation subjects already; this serves model directories made before that (the packaged demo model among them)
and a recalibration on other held-out data. The model card gains (or replaces) its ``calibration`` and
``regional_interval``; the weights, and so their checksum, stay as they are. A Hub model is calibrated as a copy: its
snapshot in the Hub cache must keep holding what its commit holds.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.bids.query import dataset_identity
from bids_jdam.config import JDAMConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.errors import InputError, one_line
from bids_jdam.evaluate.calibration import calibrate_sampling, calibration_sampler
from bids_jdam.evaluate.validation import VALIDATION_SAMPLER, predict_ensemble, validation_slices
from bids_jdam.methods import METHODS, Method
from bids_jdam.methods.hub import fetch_hub_model, is_hub_reference
from bids_jdam.methods.model_card import RegionalInterval, SpreadCalibration
from bids_jdam.methods.model_dir import load_model_dir, update_model_card
from bids_jdam.runtime.device import resolve_device
from bids_jdam.workflows.default_run_calibration import calibrate_default_run
from bids_jdam.workflows.train import CALIBRATION_SAMPLES
from bids_jdam.workflows.training_data import SubjectLoader

log = logging.getLogger(__name__)


def model_dir_to_calibrate(model: str, copy_to: Path | None = None) -> Path:
    """The directory whose card receives the calibration: ``model`` (a directory or ``hf:ORG/NAME[@REVISION]``)
    itself, or its copy in the new directory ``copy_to`` (required for a Hub model)."""
    if is_hub_reference(model):
        if copy_to is None:
            raise InputError(
                f"{model}: a Hub model stays in the Hugging Face cache as its commit holds it; pass "
                "--copy-to DIR to calibrate a copy of it"
            )
        source = fetch_hub_model(model).path
    else:
        source = Path(model)
    if copy_to is None:
        return source
    if copy_to.exists():
        raise InputError(f"{copy_to}: already exists; --copy-to needs a new directory")
    try:
        shutil.copytree(source, copy_to)  # the cache's symbolic links become plain files
    except OSError as error:
        raise InputError(f"{copy_to}: cannot copy the model {model} ({one_line(error)})") from None
    return copy_to


def calibrate_model(
    model_dir: Path,
    bids_dir: Path,
    load_subjects: SubjectLoader,
    subjects: list[str] | None = None,
    device: str = "auto",
) -> tuple[SpreadCalibration | None, RegionalInterval | None]:
    """Fit the spread scale (probabilistic methods) and the regional interval of ``model_dir`` on ``subjects`` of
    ``bids_dir`` (default: all) and record them."""
    torch_device = resolve_device(device)
    model, cfg, card = load_model_dir(model_dir, torch_device)
    method = METHODS.named(card["method"])
    subjects = subjects or list(read_diagnoses(bids_dir))
    training_data = card.get("training_data", {})
    trained = set(training_data.get("subjects", {}).get("train", {}))
    if trained & set(subjects) and training_data.get("dataset_identity") == dataset_identity(Path(bids_dir)):
        raise InputError(
            f"{bids_dir}: subjects {sorted(trained & set(subjects))} trained the model; calibrate on "
            "held-out subjects only"
        )
    volumes = list(load_subjects(Path(bids_dir), cfg, subjects))
    calibration = None
    if method.probabilistic:
        calibration = _calibrate_spread(model_dir, bids_dir, method, model, cfg, volumes, torch_device)
    return calibration, calibrate_default_run(model_dir, volumes, torch_device)


def _calibrate_spread(
    model_dir: Path,
    bids_dir: Path,
    method: Method,
    model: torch.nn.Module,
    cfg: JDAMConfig,
    volumes: list[SubjectVolumes],
    torch_device: torch.device,
) -> SpreadCalibration:
    sampler = calibration_sampler(cfg.sampler, method.network_evaluations(cfg.sampler), VALIDATION_SAMPLER)
    data = validation_slices(volumes, cfg)
    calibration = calibrate_sampling(
        lambda tempered: predict_ensemble(method, model, cfg, data, tempered, torch_device, CALIBRATION_SAMPLES),
        data,
        fitted_on=f"{len(volumes)} held-out subjects of {Path(bids_dir).name} (split-conformal, brain mask, "
        f"{sampler.name} sampler, {sampler.steps} steps)",
        sampler=sampler,
    )
    update_model_card(model_dir, {"calibration": calibration.to_dict()})
    log.info(
        "%s: sampler temperature %g, spread scale %.3f", model_dir, calibration.temperature, calibration.spread_scale
    )
    return calibration
