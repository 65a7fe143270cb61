"""The AD-pattern score of one image and its interval, calibrated on subjects.

The score is the z of the AD meta-ROI's SUVR (Landau et al. 2011: angular gyri, posterior cingulate, inferior
temporal gyri) against the model's healthy-control reference: negative where the meta-ROI is hypometabolic, the
measure the FDG literature reads for AD. One score per subject, so its interval is split-conformal on held-out
subjects (the score |z of the real PET - z of the synthetic PET|), not on voxels or regions: the conformal quantile
of n scores at level 0.9 exists only from n = 9 subjects on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bids_jdam.config import SamplerConfig
from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.evaluate.atlas_suvr import META_ROI_INDEX, RegionRow
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.methods.model_card import PatternInterval

LEVEL = 0.9


@dataclass(frozen=True)
class PatternScore:
    """One image's AD-pattern score (z), the bounds of its interval where one applies (``interval`` says how it was
    calibrated or why there is none), and the real PET's score where the image has one."""

    meta_roi_suvr: float
    z: float
    lower: float | None
    upper: float | None
    real_z: float | None
    reference_subjects: int
    interval: str


def meta_roi_row(rows: Iterable[RegionRow]) -> RegionRow | None:
    """The meta-ROI's row of a regional table (None where the brain mask holds none of it)."""
    return next((row for row in rows if row.index == META_ROI_INDEX), None)


def pattern_score(
    rows: list[RegionRow], reference: HealthyReference, interval: PatternInterval | None, interval_reason: str = ""
) -> PatternScore | None:
    """The score of an image's regional ``rows`` (``interval``: the calibration that applies to the run, with the
    sampling plan's reason); None where the meta-ROI or its healthy norm is missing."""
    row, norm = meta_roi_row(rows), reference.region(META_ROI_INDEX)
    if row is None or norm is None:
        return None
    z = norm.zscore(row.synthetic_suvr)
    half = interval.half_width_z if interval is not None else None
    return PatternScore(
        meta_roi_suvr=row.synthetic_suvr,
        z=z,
        lower=None if half is None else z - half,
        upper=None if half is None else z + half,
        real_z=None if row.real_suvr is None else norm.zscore(row.real_suvr),
        reference_subjects=len(reference.subjects),
        interval=interval_reason,
    )


def minimum_subjects(level: float = LEVEL) -> int:
    """The fewest subjects whose conformal quantile at ``level`` is finite."""
    return next(n for n in range(1, 10_000) if math.ceil((n + 1) * level) <= n)


def fit_pattern_interval(
    tables: list[list[RegionRow]],
    reference: HealthyReference,
    sampler: SamplerConfig,
    planes: tuple[str, ...],
    level: float = LEVEL,
) -> PatternInterval | None:
    """The conformal half-width from held-out subjects' regional ``tables`` (synthetic and real); None when they
    are fewer than :func:`minimum_subjects`."""
    scores = []
    for rows in tables:
        score = pattern_score(rows, reference, None)
        if score is not None and score.real_z is not None:
            scores.append(abs(score.real_z - score.z))
    half_width = conformal_quantile(np.asarray(scores), level)
    if not math.isfinite(half_width):
        return None
    return PatternInterval(
        half_width_z=half_width,
        level=level,
        **PatternInterval.synthesis(sampler, planes),
        subjects=len(scores),
        reference_subjects=len(reference.subjects),
    )
