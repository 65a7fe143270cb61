"""Posterior scores of the quality benchmark: CRPS, spread-skill, coverage, SD-error correlation, whether the SD
says where the error is (``bids_jdam.evaluate.error_ranking``), AD-vs-CN.

Every score comes from ``bids_jdam.evaluate`` (one definition each); this module only groups the evaluated slices
by subject (the unit of the statistics), applies the spread calibration fitted on the calibration subjects, and
summarizes over subjects. The reference is the phantom's noise-free template-space PET SUVR (the training target).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.quality_stats import summarize
from bids_jdam.config import SamplerConfig
from bids_jdam.data.slices import cut_slice, pad_slice
from bids_jdam.evaluate.calibration import calibrate_sampling, subject_cases
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM, uncertainty_error_correlation
from bids_jdam.evaluate.error_ranking import error_ranking_scores, predictive_scale
from bids_jdam.evaluate.probabilistic import probabilistic_scores
from bids_jdam.evaluate.validation import ValidationSlices
from bids_jdam.methods.model_card import SpreadCalibration
from bids_jdam.synthesis.spread import inflate

RANKING_METRICS = (
    "rmse_top_over_bottom_fifth",
    "ause_relative",
    "crps_over_constant_band",
    "oracle_crps_over_constant_band",
)
PROBABILISTIC_METRICS = (
    "crps",
    "spread_skill_ratio",
    "coverage_50",
    "coverage_90",
    "sd_error_correlation",
    *RANKING_METRICS,
)
AD_CN_REGIONS = ("parietal", "temporal")


def fit_calibration(
    predict: Callable[[SamplerConfig], torch.Tensor], data: ValidationSlices, sampler: SamplerConfig
) -> SpreadCalibration:
    """The sampler temperature and spread scale of a K-sample posterior, fitted on the calibration subjects' slices
    (``predict`` draws their K samples with a given sampler), as the app's training does on its validation subjects."""
    return calibrate_sampling(
        predict, data, fitted_on="calibration phantom subjects (split-conformal, brain mask)", sampler=sampler
    )


def _subject_scores(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, spacing_mm: float) -> dict[str, Any]:
    scores = probabilistic_scores(samples, truth, mask)
    row = {"crps": scores["crps"]}
    if len(samples) > 1:
        sigma = PET_RESOLUTION_SIGMA_MM / spacing_mm
        mean, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
        ranking = error_ranking_scores(predictive_scale(std, len(samples)), mean, truth, mask, (0, sigma, sigma))
        row |= {key: ranking[key] for key in RANKING_METRICS} | {
            "spread_skill_ratio": scores["spread_skill_ratio"],
            "coverage_50": scores["coverage"]["0.50"],
            "coverage_90": scores["coverage"]["0.90"],
            "rank_histogram": scores["rank_histogram"],
            "sd_error_correlation": uncertainty_error_correlation(std, mean, truth, mask, (0, sigma, sigma)),
        }
    return row


def probabilistic_rows(
    predictions: torch.Tensor, data: ValidationSlices, calibration: SpreadCalibration | None, spacing_mm: float
) -> dict[str, Any]:
    """Scores over subjects of the raw samples and (with ``calibration``) of the calibrated ones."""
    variants = {"raw": 1.0} | ({"calibrated": calibration.spread_scale} if calibration else {})
    out: dict[str, Any] = {}
    for variant, scale in variants.items():
        per_subject = {
            s: _subject_scores(inflate(samples, scale), truth, mask, spacing_mm)
            for s, (samples, truth, mask) in subject_cases(predictions, data).items()
        }
        first = next(iter(per_subject.values()))
        out[variant] = {
            m: summarize({s: row[m] for s, row in per_subject.items()}) for m in PROBABILISTIC_METRICS if m in first
        }
        if "rank_histogram" in first:
            out[variant]["rank_histogram"] = np.sum(
                [row["rank_histogram"] for row in per_subject.values()], axis=0
            ).tolist()
    return out


def ad_cn_differences(
    prediction: torch.Tensor,
    data: ValidationSlices,
    labels: np.ndarray,
    names: dict[int, str],
    diagnoses: dict[str, str],
    size: int,
) -> dict[str, Any]:
    """Mean SUVR of AD minus CN subjects in each region, synthetic vs real (the paper's Figure 7, measurable)."""
    region_ids = {name: label for label, name in names.items() if name in AD_CN_REGIONS}
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for i, (subject, plane, index) in enumerate(data.keys):
        cut = pad_slice(cut_slice(labels, plane, index), plane, size)
        for region, label in region_ids.items():
            inside = (cut == label) & data.mask[i, 0].numpy()
            if inside.any():
                entry = values.setdefault(region, {}).setdefault(subject, {"synthetic": [], "real": []})
                entry["synthetic"].append(float(prediction[i, 0].float().numpy()[inside].mean()))
                entry["real"].append(float(data.pet[i, 0].numpy()[inside].mean()))
    out = {}
    for region, subjects in values.items():
        groups = {
            kind: {dx: [np.mean(v[kind]) for s, v in subjects.items() if diagnoses.get(s) == dx] for dx in ("AD", "CN")}
            for kind in ("synthetic", "real")
        }
        difference = {
            kind: float(np.mean(g["AD"]) - np.mean(g["CN"])) if g["AD"] and g["CN"] else None
            for kind, g in groups.items()
        }
        out[region] = {
            "ad_minus_cn_synthetic": difference["synthetic"],
            "ad_minus_cn_real": difference["real"],
            "subjects": {dx: len(groups["real"][dx]) for dx in ("AD", "CN")},
        }
    return out
