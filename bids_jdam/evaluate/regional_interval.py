"""Calibrated intervals for regional SUVR, fitted at the level they are read: regions, not voxels.

A voxel SD averaged over a region is no interval for the regional mean (the errors of neighbouring voxels are not
independent), so the interval is split-conformal on regions: the app's own synthesis (the sampler, steps, planes
and K a default run uses) on held-out subjects the model never trained on, each AAL3 region and the AD meta-ROI
one (subject, region) pair, the score |real SUVR - synthetic SUVR|, and the half-width the conformal quantile of
those scores. Regional means of the synthetic PET +- that half-width then cover the real regional SUVR of a new
subject's regions ``level`` of the time, on average over (subject, region) pairs, wherever the held-out subjects
were exchangeable with the new one. Errors of one subject's regions move together, so one subject's regions may
all be covered or all missed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from bids_jdam.config import SamplerConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.errors import InputError
from bids_jdam.evaluate.atlas_suvr import regional_suvr
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.methods.model_card import RegionalInterval

LEVEL = 0.9


def regional_errors(synthesize, subjects: Iterable[SubjectVolumes], spacing_mm: float) -> np.ndarray:
    """|real - synthetic| regional SUVR of every (subject, region) pair; ``synthesize(subject)`` gives the mean."""
    scores = []
    for subject in subjects:
        rows = regional_suvr(synthesize(subject), subject.brain_mask, spacing_mm, real=subject.pet)
        scores.extend(abs(row.real_suvr - row.synthetic_suvr) for row in rows)
    return np.asarray(scores)


def fit_regional_interval(
    synthesize,
    subjects: list[SubjectVolumes],
    spacing_mm: float,
    sampler: SamplerConfig,
    planes: tuple[str, ...],
    level: float = LEVEL,
) -> RegionalInterval:
    """The conformal half-width over the held-out ``subjects``, for synthesis with ``sampler`` along ``planes``."""
    scores = regional_errors(synthesize, subjects, spacing_mm)
    half_width = conformal_quantile(scores, level)
    if not math.isfinite(half_width):
        raise InputError(f"{len(scores)} (subject, region) pairs are too few for a {level:.0%} conformal interval")
    return RegionalInterval(
        half_width_suvr=half_width,
        level=level,
        sampler=sampler.name,
        steps=sampler.steps,
        num_samples=sampler.num_samples,
        planes=len(planes),
        subjects=len(subjects),
        pairs=len(scores),
    )
