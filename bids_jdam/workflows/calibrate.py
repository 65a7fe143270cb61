"""Calibrate the posterior spread of an existing model directory on held-out subjects it was not trained on.

Training fits the calibration on its validation subjects already; this serves model directories made before that
(the packaged demo model among them) and a recalibration on other held-out data. The model card gains (or replaces)
its ``calibration``; the weights, and so their checksum, stay as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.bids.query import dataset_identity
from bids_jdam.device import resolve_device
from bids_jdam.errors import InputError
from bids_jdam.evaluate.calibration import SpreadCalibration, calibrate_sampling, calibration_sampler
from bids_jdam.evaluate.validation import VALIDATION_SAMPLER, predict_ensemble, validation_slices
from bids_jdam.models.methods import METHODS
from bids_jdam.models.model_dir import load_model_dir, update_model_card
from bids_jdam.workflows.train import CALIBRATION_SAMPLES
from bids_jdam.workflows.training_data import SubjectLoader

log = logging.getLogger(__name__)


def calibrate_model(model_dir: Path, bids_dir: Path, load_subjects: SubjectLoader, subjects: list[str] | None = None,
                    device: str = "auto") -> SpreadCalibration:
    """Fit the spread scale of ``model_dir`` on ``subjects`` of ``bids_dir`` (default: all) and record it."""
    torch_device = resolve_device(device)
    model, cfg, card = load_model_dir(model_dir, torch_device)
    method = METHODS.named(card["method"])
    if not method.probabilistic:
        raise InputError(f"{model_dir}: method {method.name} makes one deterministic prediction: no spread to calibrate")
    subjects = subjects or list(read_diagnoses(bids_dir))
    training_data = card.get("training_data", {})
    trained = set(training_data.get("subjects", {}).get("train", {}))
    if trained & set(subjects) and training_data.get("dataset_identity") == dataset_identity(Path(bids_dir)):
        raise InputError(f"{bids_dir}: subjects {sorted(trained & set(subjects))} trained the model; calibrate on "
                         "held-out subjects only")
    sampler = calibration_sampler(cfg.sampler, method.network_evaluations(cfg.sampler), VALIDATION_SAMPLER)
    data = validation_slices(load_subjects(Path(bids_dir), cfg, subjects), cfg)
    calibration = calibrate_sampling(
        lambda tempered: predict_ensemble(method, model, cfg, data, tempered, torch_device, CALIBRATION_SAMPLES),
        data, fitted_on=f"{len(subjects)} held-out subjects of {Path(bids_dir).name} (split-conformal, brain mask, "
                        f"{sampler.name} sampler, {sampler.steps} steps)", sampler=sampler)
    update_model_card(model_dir, {"calibration": calibration.to_dict()})
    log.info("%s: sampler temperature %g, spread scale %.3f", model_dir, calibration.temperature,
             calibration.spread_scale)
    return calibration
