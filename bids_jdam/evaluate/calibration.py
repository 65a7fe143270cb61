"""Calibration of a posterior's spread: one scale for the samples' deviations, fitted on held-out data only.

An L2-trained denoiser tends to under-disperse (GenCast counters it with noise inflation), so the spread of K
samples is smaller than the error of their mean. The remedy here is split-conformal (Angelopoulos et al. 2022):
on validation subjects, ``spread_scale`` is the factor that makes the central ``level`` prediction interval of
:func:`bids_jdam.evaluate.probabilistic.coverage` cover exactly that fraction of brain voxels; at inference the
samples are spread by it around their mean (:func:`bids_jdam.synthesis.spread.inflate`), so the mean is unchanged,
the SD map is multiplied
by it, and every score (CRPS, spread-skill, coverage, rank histogram) is that of the calibrated samples.

The mean of K samples carries 1/K of their spread as error (a posterior sample's error is twice the posterior
mean's), so the samples may be drawn at a sampler temperature below 1, nearer their mean, and spread back by the
scale: :func:`calibrate_sampling` picks the temperature whose calibrated samples have the lowest fair CRPS on the
held-out subjects (GenCast chooses its noise inflation the same way), so the temperature is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from bids_jdam.config import SamplerConfig
from bids_jdam.evaluate.probabilistic import fair_crps
from bids_jdam.evaluate.validation import ValidationSlices
from bids_jdam.methods.model_card import SpreadCalibration
from bids_jdam.synthesis.spread import inflate, interval_half_width_in_sd

CALIBRATION_LEVEL = 0.9
# The sampler temperatures a calibration compares (1 = the plain sampler).
CALIBRATION_TEMPERATURES = (1.0, 0.7, 0.5, 0.35)


# Per slice and sample; a model whose default sampler costs more (the paper's PC-1000) is calibrated with
# the validation sampler, and its calibration then applies to that sampler only.
MAX_CALIBRATION_EVALUATIONS = 64


def calibration_sampler(default: SamplerConfig, evaluations: int, fallback: SamplerConfig) -> SamplerConfig:
    """The model's own default sampler (the spread is the sampler's), unless it costs over the limit per slice."""
    return dataclasses.replace(default if evaluations <= MAX_CALIBRATION_EVALUATIONS else fallback, num_samples=1)


def conformity_scores(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, level: float = CALIBRATION_LEVEL
) -> np.ndarray:
    """|truth - mean| over the half-width factor of the interval, per brain voxel (K >= 2 samples, (K, *shape))."""
    samples = np.asarray(samples, dtype=np.float64)
    k = len(samples)
    if k < 2:
        raise ValueError("calibrating a spread needs at least 2 samples")
    m = np.asarray(mask, dtype=bool)
    mean, std = samples.mean(axis=0)[m], samples.std(axis=0, ddof=1)[m]
    width = interval_half_width_in_sd(k, level) * std
    return np.abs(np.asarray(truth, dtype=np.float64)[m] - mean) / np.maximum(width, 1e-12)


def conformal_quantile(scores: np.ndarray, level: float = CALIBRATION_LEVEL) -> float:
    """The split-conformal quantile of ``scores``: the ceil((n + 1) level)-th smallest (inf when n is too small)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = math.ceil((len(ordered) + 1) * level)
    return float(ordered[rank - 1]) if rank <= len(ordered) else math.inf


def fit_spread_scale(
    cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], subjects: int, level: float = CALIBRATION_LEVEL
) -> SpreadCalibration:
    """The conformal scale from (samples, truth, mask) cases: the finite-sample ``level`` quantile of the scores."""
    cases = list(cases)
    scores = np.concatenate([conformity_scores(s, t, m, level) for s, t, m in cases])
    scale = conformal_quantile(scores, level)
    if not math.isfinite(scale):
        raise ValueError(f"{len(scores)} voxels are too few for a {level:.0%} conformal scale")
    return SpreadCalibration(
        spread_scale=scale, level=level, num_samples=len(cases[0][0]), voxels=len(scores), subjects=subjects
    )


def subject_cases(predictions: torch.Tensor, data: ValidationSlices) -> dict[str, tuple[np.ndarray, ...]]:
    """subject -> (samples (K, n, H, W), truth (n, H, W), mask (n, H, W)) of its slices, from ``[K, N, 1, H, W]``."""
    rows: dict[str, list[int]] = {}
    for i, (subject, _, _) in enumerate(data.keys):
        rows.setdefault(subject, []).append(i)
    samples, truth, mask = predictions[:, :, 0].float().numpy(), data.pet[:, 0].numpy(), data.mask[:, 0].numpy()
    return {s: (samples[:, i] * mask[i], truth[i], mask[i]) for s, i in rows.items()}


def calibrate_on(
    predictions: torch.Tensor, data: ValidationSlices, fitted_on: str, sampler: SamplerConfig
) -> SpreadCalibration:
    """The spread scale of K-sample ``predictions`` (made with ``sampler``) of held-out slices ``data``."""
    cases = subject_cases(predictions, data)
    return dataclasses.replace(
        fit_spread_scale(cases.values(), subjects=len(cases)),
        fitted_on=fitted_on,
        sampler=sampler.name,
        steps=sampler.steps,
    )


def calibrated_crps(predictions: torch.Tensor, data: ValidationSlices, spread_scale: float) -> float:
    """The mean over subjects of the fair CRPS of ``predictions`` spread by ``spread_scale``."""
    cases = subject_cases(predictions, data).values()
    return float(np.mean([fair_crps(inflate(samples, spread_scale), truth, mask) for samples, truth, mask in cases]))


def calibrate_sampling(
    predict: Callable[[SamplerConfig], torch.Tensor],
    data: ValidationSlices,
    fitted_on: str,
    sampler: SamplerConfig,
    temperatures: Iterable[float] = CALIBRATION_TEMPERATURES,
) -> SpreadCalibration:
    """The temperature and spread scale of ``sampler`` on held-out ``data``: at each temperature, the K samples
    ``predict`` draws get their conformal scale, and the temperature whose calibrated samples score the lowest fair
    CRPS wins (ties: the highest temperature, the plainer sampler)."""
    fits: dict[float, tuple[float, SpreadCalibration]] = {}
    for temperature in sorted(set(temperatures), reverse=True):
        tempered = dataclasses.replace(sampler, temperature=temperature)
        predictions = predict(tempered)
        calibration = dataclasses.replace(calibrate_on(predictions, data, fitted_on, tempered), temperature=temperature)
        fits[temperature] = (calibrated_crps(predictions, data, calibration.spread_scale), calibration)
    best = min(fits, key=lambda t: fits[t][0])
    return dataclasses.replace(fits[best][1], crps_by_temperature={f"{t:g}": round(c, 6) for t, (c, _) in fits.items()})
