"""One decision for how a run samples and which of the model card's calibrations hold for it.

A calibration holds only for the synthesis it was fitted on (sampler, steps, planes and, for the regional interval
and the single-sample SD map, K). Options such as ``--sampler``, ``--steps``, ``--planes`` or ``--num-samples`` can
step outside it; this module decides once, says why in the log (once per model and setting) and hands the reasons
to the provenance, so every sidecar records them: a calibration is never switched off in silence.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bids_jdam.config import SamplerConfig
from bids_jdam.methods.model_card import FittedInterval, ModelCard, PatternInterval, RegionalInterval

log = logging.getLogger("bids_jdam.synthesis")

SPREAD_FITTED_FOR = (
    "the spread calibration was fitted for sampler {}, {} steps, {} plane(s); this run uses {}, {} steps, {} plane(s)"
)


@dataclass(frozen=True)
class SamplingPlan:
    """The sampler a run uses and the calibrations that apply to it, each with the reason."""

    sampler: SamplerConfig  # at the calibrated temperature where the spread calibration applies
    spread_scale: float | None  # None: the SD across samples (K > 1) is not calibrated
    spread_reason: str
    regional_interval: RegionalInterval | None  # None: the regional tables carry no interval
    interval_reason: str
    predictive_sd: bool  # the single-sample SD map applies (K = 1, the synthesis it was fitted for)
    pattern_interval: PatternInterval | None  # None: the AD-pattern score carries no interval
    pattern_reason: str
    predictive_sd_reason: str  # how the single-sample SD map was fitted, or why the run has none

    def notes(self) -> dict[str, str]:
        """What the sidecars record: why each calibration applies or not."""
        return {
            "spread": self.spread_reason,
            "regional_interval": self.interval_reason,
            "ad_pattern_interval": self.pattern_reason,
            "predictive_sd": self.predictive_sd_reason,
        }


def plan_sampling(card: ModelCard, sampler: SamplerConfig, planes: tuple[str, ...]) -> SamplingPlan:
    """The plan for a run of ``sampler`` along ``planes`` with the model of ``card``."""
    calibrated, spread_scale, spread_reason = _spread(card, sampler, planes)
    interval, interval_reason = _interval(card, sampler, planes)
    pattern, pattern_reason = _pattern_interval(card, sampler, planes)
    predictive_sd, predictive_sd_reason = _predictive_sd(card, sampler, interval is not None, interval_reason)
    return SamplingPlan(
        sampler=calibrated,
        spread_scale=spread_scale,
        spread_reason=spread_reason,
        regional_interval=interval,
        interval_reason=interval_reason,
        predictive_sd=predictive_sd,
        pattern_interval=pattern,
        pattern_reason=pattern_reason,
        predictive_sd_reason=predictive_sd_reason,
    )


def _predictive_sd(card: ModelCard, sampler: SamplerConfig, fitted_run: bool, interval_reason: str) -> tuple[bool, str]:
    """Whether the single-sample SD map is written (fitted with the regional interval, so for the same run) and
    how it was fitted, or why not."""
    record = card.single_sample_sd
    if record is None:
        return False, f"the model {card.name} records no single-sample SD model (bids-jdam-calibrate fits one)"
    if not fitted_run:
        return False, f"no predictive SD map: {interval_reason}"
    if sampler.num_samples != 1:
        return (
            False,
            f"no predictive SD map: this run draws K = {sampler.num_samples} samples (their SD is desc-jdamstd)",
        )
    fifths = " per fifth of the map" if record.get("bin_factors") else ""
    return True, (
        f"log squared error regressed on {', '.join(record.get('features', ()))} over {record.get('voxels')} voxels "
        f"of {record.get('subjects')} held-out subjects, split-conformal {100 * record.get('level', 0.9):.0f} %{fifths}"
    )


def _spread(
    card: ModelCard, sampler: SamplerConfig, planes: tuple[str, ...]
) -> tuple[SamplerConfig, float | None, str]:
    calibration = card.calibration
    if calibration is None:
        return sampler, None, f"the model {card.name} records no spread calibration"
    used = (sampler.name, sampler.steps, len(planes))
    if used != calibration.fitted_for():
        reason = SPREAD_FITTED_FOR.format(*calibration.fitted_for(), *used)
        _warn_once(card.name, reason, "its SD maps are not calibrated")
        return sampler, None, reason
    reason = (
        f"calibrated on {calibration.subjects} held-out subjects: sampler temperature {calibration.temperature:g}, "
        f"spread scale {calibration.spread_scale:.4g}"
    )
    return dataclasses.replace(sampler, temperature=calibration.temperature), calibration.spread_scale, reason


def _interval(card: ModelCard, sampler: SamplerConfig, planes: tuple[str, ...]) -> tuple[RegionalInterval | None, str]:
    interval = card.regional_interval
    return _applies(
        card,
        interval,
        (sampler, planes),
        f"the model {card.name} records no regional interval (bids-jdam-calibrate fits one)",
        "the regional tables carry no interval and no predictive SD map is written",
        lambda: (
            f"split-conformal on {interval.pairs} (subject, region) pairs of {interval.subjects} held-out "
            f"subjects, half-width {interval.half_width_suvr:.4g} SUVR"
        ),
    )


def _pattern_interval(
    card: ModelCard, sampler: SamplerConfig, planes: tuple[str, ...]
) -> tuple[PatternInterval | None, str]:
    interval = card.pattern_interval
    if card.healthy_reference is None:
        return None, f"the model {card.name} records no healthy-control reference, so no AD-pattern score"
    return _applies(
        card,
        interval,
        (sampler, planes),
        f"the model {card.name} records no AD-pattern interval (bids-jdam-calibrate fits one on 9 or more held-out "
        "subjects)",
        "the AD-pattern score carries no interval",
        lambda: f"split-conformal on {interval.subjects} held-out subjects, half-width {interval.half_width_z:.3g} z",
    )


def _applies(
    card: ModelCard,
    interval: FittedInterval | None,
    run: tuple[SamplerConfig, tuple[str, ...]],
    missing: str,
    consequence: str,
    how: Callable[[], str],
) -> tuple[Any, str]:
    """``interval`` and how it was fitted where the ``run`` synthesizes as it was fitted; else None and why."""
    if interval is None:
        return None, missing
    reason = interval.reason_not_applied(*run)
    if reason is not None:
        _warn_once(card.name, reason, consequence)
        return None, reason
    return interval, how()


@functools.cache
def _warn_once(model: str, reason: str, consequence: str) -> None:
    """Say once per process and setting that a run steps outside what a calibration was fitted for."""
    log.warning("%s: %s, so %s", model, reason, consequence)
