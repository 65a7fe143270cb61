"""Fit what a default run's outputs need from held-out subjects: the regional interval and the single-sample SD map.

Called at the end of training (its validation subjects) and by ``bids-jdam-calibrate`` (any held-out pairs); the
interval itself is :mod:`bids_jdam.evaluate.regional_interval`, the SD map :mod:`bids_jdam.synthesis.error_model`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.template import grid_shape
from bids_jdam.evaluate.ad_pattern import fit_pattern_interval, minimum_subjects
from bids_jdam.evaluate.atlas_suvr import RegionRow
from bids_jdam.evaluate.calibration import MAX_CALIBRATION_EVALUATIONS
from bids_jdam.evaluate.regional_interval import fit_regional_interval, regional_tables
from bids_jdam.evaluate.single_sample_sd import Case, fit_error_model
from bids_jdam.methods import Method
from bids_jdam.methods.model_card import AD_PATTERN_INTERVAL, SINGLE_SAMPLE_SD, RegionalInterval
from bids_jdam.methods.model_dir import update_model_card
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows.run_config import DEFAULT_PLANES

log = logging.getLogger(__name__)


def calibrate_after_training(
    model_dir: Path, method: Method, cfg: JDAMConfig, volumes: Iterable[SubjectVolumes], device: torch.device | str
) -> None:
    """:func:`calibrate_default_run` on the validation ``volumes``, where the model's sampler is fast enough to
    synthesize whole brains here (a PC-1000 model is calibrated later with bids-jdam-calibrate)."""
    volumes, evaluations = list(volumes), method.network_evaluations(cfg.sampler)
    if not volumes or evaluations > MAX_CALIBRATION_EVALUATIONS:
        log.info(
            "no regional interval fitted: %s; bids-jdam-calibrate fits one",
            "no held-out subjects"
            if not volumes
            else f"the {cfg.sampler.name} sampler takes {evaluations} network evaluations per slice",
        )
        return
    calibrate_default_run(model_dir, volumes, device)


def calibrate_default_run(
    model_dir: Path, volumes: list[SubjectVolumes], device: torch.device | str
) -> RegionalInterval | None:
    """Fit the regional interval of ``model_dir`` as users load it, for a default participant run (the model's
    sampler and K, the default planes), on held-out ``volumes``, and, where that run draws one sample, the single-
    sample SD map (:mod:`bids_jdam.synthesis.error_model`) on the same syntheses; record both in the model card.

    None, with a log line, for volumes not on the template grid (a cropped test grid has no atlas regions).
    """
    model = LoadedModel.from_dir(model_dir, device)
    spacing = model.cfg.grid.spacing_mm
    if any(v.t1.shape != grid_shape(spacing) for v in volumes):
        log.info("%s: no regional interval: the held-out volumes are not on the template grid", model_dir)
        return None
    synthesizer = Synthesizer(model, device)
    sampler, planes = model.cfg.sampler, DEFAULT_PLANES
    means = {
        v.subject: synthesizer.synthesize(v.t1, v.brain_mask, sampler, image=f"sub-{v.subject}", planes=planes).mean
        for v in volumes
    }
    tables = regional_tables(lambda v: means[v.subject], volumes, spacing)
    interval = fit_regional_interval(tables, sampler, planes)
    record = {"regional_interval": interval.to_dict(), **_pattern_interval(model, tables, sampler, planes)}
    log.info(
        "%s: regional %.0f %% interval +-%.4f SUVR (%d regions of %d held-out subjects)",
        model_dir,
        100 * interval.level,
        interval.half_width_suvr,
        interval.pairs,
        interval.subjects,
    )
    if sampler.num_samples == 1:
        cases = [
            Case(
                means[v.subject], v.t1, v.pet, v.brain_mask,
                synthesizer.regression_views(v.t1, v.brain_mask, image=f"sub-{v.subject}"),
            )
            for v in volumes
        ]  # fmt: skip
        error_model = fit_error_model(cases, spacing, healthy=model.healthy_reference)
        record[SINGLE_SAMPLE_SD] = error_model.to_dict()
        log.info(
            "%s: single-sample SD map fitted on %d voxels of %d held-out subjects",
            model_dir,
            error_model.voxels,
            error_model.subjects,
        )
    update_model_card(model_dir, record)
    return interval


def _pattern_interval(
    model: LoadedModel, tables: list[list[RegionRow]], sampler: SamplerConfig, planes: tuple[str, ...]
) -> dict:
    """The card's AD-pattern interval, where the model has a healthy reference and enough held-out subjects."""
    if model.healthy_reference is None:
        log.info("no AD-pattern interval: the model records no healthy-control reference")
        return {AD_PATTERN_INTERVAL: None}
    interval = fit_pattern_interval(tables, model.healthy_reference, sampler, planes)
    if interval is None:
        log.info(
            "no AD-pattern interval: %d held-out subjects, a 90 %% conformal interval on subjects needs %d",
            len(tables),
            minimum_subjects(),
        )
        return {AD_PATTERN_INTERVAL: None}  # an earlier calibration's interval would not hold for this one
    log.info("AD-pattern 90 %% interval +-%.3f z (%d held-out subjects)", interval.half_width_z, interval.subjects)
    return {AD_PATTERN_INTERVAL: interval.to_dict()}
