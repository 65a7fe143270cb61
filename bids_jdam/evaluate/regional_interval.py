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
from bids_jdam.evaluate.atlas_suvr import RegionRow, regional_suvr
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.methods.model_card import RegionalInterval

LEVEL = 0.9


def regional_tables(synthesize, subjects: Iterable[SubjectVolumes], spacing_mm: float) -> list[list[RegionRow]]:
    """Each subject's regional rows, synthetic (``synthesize(subject)`` gives the mean) beside its real PET."""
    return [
        regional_suvr(synthesize(subject), subject.brain_mask, spacing_mm, real=subject.pet) for subject in subjects
    ]


def regional_errors(tables: list[list[RegionRow]]) -> np.ndarray:
    """|real - synthetic| regional SUVR of every (subject, region) pair of the ``tables``."""
    return np.asarray([abs(row.real_suvr - row.synthetic_suvr) for rows in tables for row in rows])


def fit_regional_interval(
    tables: list[list[RegionRow]], sampler: SamplerConfig, planes: tuple[str, ...], level: float = LEVEL
) -> RegionalInterval:
    """The conformal half-width over held-out subjects' regional ``tables``, for synthesis with ``sampler`` along
    ``planes``."""
    scores = regional_errors(tables)
    half_width = conformal_quantile(scores, level)
    if not math.isfinite(half_width):
        raise InputError(f"{len(scores)} (subject, region) pairs are too few for a {level:.0%} conformal interval")
    return RegionalInterval(
        half_width_suvr=half_width,
        level=level,
        **RegionalInterval.synthesis(sampler, planes),
        subjects=len(tables),
        pairs=len(scores),
    )
