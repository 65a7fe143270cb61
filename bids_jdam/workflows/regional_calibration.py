"""Fit a model directory's regional interval on held-out subjects, for the synthesis a default run makes.

Called at the end of training (its validation subjects) and by ``bids-jdam-calibrate`` (any held-out pairs); the
interval itself is :mod:`bids_jdam.evaluate.regional_interval`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.template import grid_shape
from bids_jdam.evaluate.regional_interval import RegionalInterval, fit_regional_interval
from bids_jdam.models.model_dir import update_model_card
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows.run_config import DEFAULT_PLANES

log = logging.getLogger(__name__)


def calibrate_regions(model_dir: Path, volumes: list[SubjectVolumes],
                      device: torch.device | str) -> RegionalInterval | None:
    """Fit the regional interval of ``model_dir`` as users load it, for a default participant run (the model's
    sampler and K, the default planes), on held-out ``volumes``, and record it in the model card.

    None, with a log line, for volumes not on the template grid (a cropped test grid has no atlas regions).
    """
    model = LoadedModel.from_dir(model_dir, device)
    if any(v.t1.shape != grid_shape(model.cfg.grid.spacing_mm) for v in volumes):
        log.info("%s: no regional interval: the held-out volumes are not on the template grid", model_dir)
        return None
    synthesizer = Synthesizer(model, device)
    sampler, planes = model.cfg.sampler, DEFAULT_PLANES

    def synthesize(subject: SubjectVolumes) -> np.ndarray:
        return synthesizer.synthesize(subject.t1, subject.brain_mask, sampler, image=f"sub-{subject.subject}",
                                      planes=planes).mean

    interval = fit_regional_interval(synthesize, volumes, model.cfg.grid.spacing_mm, sampler, planes)
    update_model_card(model_dir, {"regional_interval": interval.to_dict()})
    log.info("%s: regional %.0f %% interval +-%.4f SUVR (%d regions of %d held-out subjects)", model_dir,
             100 * interval.level, interval.half_width_suvr, interval.pairs, interval.subjects)
    return interval
