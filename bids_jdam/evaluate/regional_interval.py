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

import functools
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bids_jdam.config import SamplerConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.errors import InputError
from bids_jdam.evaluate.atlas_suvr import ATLAS, regional_suvr
from bids_jdam.evaluate.calibration import conformal_quantile

log = logging.getLogger("bids_jdam.regions")

LEVEL = 0.9


@dataclass(frozen=True)
class RegionalInterval:
    """The half-width of the regional ``level`` interval and the synthesis it was fitted for."""

    half_width_suvr: float
    level: float
    sampler: str
    steps: int
    num_samples: int
    planes: int
    subjects: int
    pairs: int
    atlas: str = ATLAS

    def reason_not_applied(self, sampler: SamplerConfig, planes: tuple[str, ...]) -> str | None:
        """None where a run synthesizes as the interval was fitted; else why its regional intervals are n/a."""
        fitted = (self.sampler, self.steps, self.num_samples, self.planes)
        used = (sampler.name, sampler.steps, sampler.num_samples, len(planes))
        if fitted == used:
            return None
        return (
            "the regional interval was fitted for sampler {}, {} steps, K = {}, {} plane(s); this run uses {}, {} "
            "steps, K = {}, {} plane(s)"
        ).format(*fitted, *used)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RegionalInterval:
        """The card's ``regional_interval``, checked: a readable message naming ``where`` otherwise."""
        try:
            interval = cls(**data)
            valid = interval.half_width_suvr > 0 and 0 < interval.level < 1
        except TypeError as error:
            raise InputError(f"{where}: regional_interval is not a valid record ({error})") from None
        if not valid:
            raise InputError(f"{where}: regional_interval needs a positive half_width_suvr and a level in (0, 1)")
        return interval


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


def applicable_interval(
    card: dict[str, Any], model_name: str, sampler: SamplerConfig, planes: tuple[str, ...]
) -> tuple[RegionalInterval | None, str | None]:
    """The model card's regional interval where this run synthesizes as it was fitted, else None and why not."""
    if "regional_interval" not in card:
        return None, f"the model {model_name} records no regional interval (bids-jdam-calibrate fits one)"
    interval = RegionalInterval.from_dict(card["regional_interval"], f"{model_name} model card")
    reason = interval.reason_not_applied(sampler, planes)
    if reason is not None:
        _warn_not_applied(model_name, reason)
    return (None, reason) if reason else (interval, None)


@functools.cache
def _warn_not_applied(model_name: str, reason: str) -> None:
    """Once per process and setting: a run whose regional tables carry no interval says why in the log."""
    log.warning("%s: %s, so the regional tables carry no interval", model_name, reason)
