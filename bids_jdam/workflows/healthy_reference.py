"""Record a model's healthy-control reference from its CN training subjects (``bids-jdam-train`` does, at the end).

The reference itself is :mod:`bids_jdam.evaluate.healthy_reference`; this writes it into the model directory and
its card, where a run finds it (:class:`~bids_jdam.synthesis.loaded_model.LoadedModel`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.data.template import grid_shape
from bids_jdam.evaluate.healthy_reference import MIN_SUBJECTS, build_healthy_reference, healthy_subjects
from bids_jdam.methods.model_card import HEALTHY_REFERENCE
from bids_jdam.methods.model_dir import update_model_card

log = logging.getLogger(__name__)


def record_healthy_reference(
    model_dir: Path, volumes: Iterable[SubjectVolumes], spacing_mm: float
) -> HealthyReference | None:
    """Build the reference of the CN subjects among ``volumes`` into ``model_dir``; None, with a log line saying
    why, where they are too few or not on the template grid (the card then records none)."""
    healthy = healthy_subjects(volumes)
    if len(healthy) < MIN_SUBJECTS or any(v.pet.shape != grid_shape(spacing_mm) for v in healthy):
        log.info(
            "no healthy-control reference: %s",
            f"{len(healthy)} CN training subjects, at least {MIN_SUBJECTS} are needed"
            if len(healthy) < MIN_SUBJECTS
            else "the training volumes are not on the template grid",
        )
        update_model_card(model_dir, {HEALTHY_REFERENCE: None})
        return None
    reference = build_healthy_reference(healthy, spacing_mm)
    update_model_card(model_dir, {HEALTHY_REFERENCE: reference.save(model_dir)})
    log.info("healthy-control reference of %d CN training subjects recorded in %s", len(healthy), model_dir)
    return reference
