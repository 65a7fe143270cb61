"""Fit the single-sample predictive SD model (:mod:`bids_jdam.synthesis.error_model`) on held-out syntheses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.synthesis.error_model import BINS, FEATURES, HEALTHY_FEATURES, LEVEL, ErrorModel, features, relative_sd

Case = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # synthetic mean, T1w, reference PET, brain mask


def fit_error_model(
    cases: Sequence[Case], spacing_mm: float, level: float = LEVEL, healthy: HealthyReference | None = None
) -> ErrorModel:
    """Fit on held-out (synthetic mean, T1w, reference PET, brain mask) cases, with the model's healthy-control
    reference's features where it has one; conformal on the same voxels, one factor per fifth of the relative map
    (locally adaptive), and one over all voxels for the record."""
    names = FEATURES if healthy is None else FEATURES + HEALTHY_FEATURES
    return fit_on_designs([case_design(case, spacing_mm, healthy) for case in cases], names, level)


def case_design(
    case: Case, spacing_mm: float, healthy: HealthyReference | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One case's design matrix and its errors (reference - mean) inside the mask."""
    mean, t1, reference, mask = case
    mask = np.asarray(mask, dtype=bool)
    error = (np.asarray(reference, dtype=np.float64) - np.asarray(mean, dtype=np.float64))[mask]
    return features(mean, t1, mask, spacing_mm, healthy), error


def fit_on_designs(
    designs: Sequence[tuple[np.ndarray, np.ndarray]], names: tuple[str, ...], level: float = LEVEL
) -> ErrorModel:
    """:func:`fit_error_model` on cases whose designs are computed already (``names``: their columns), so that a
    selection over held-out subjects computes each subject's features once."""
    design = np.concatenate([d for d, _ in designs])
    error = np.concatenate([e for _, e in designs])
    floor = 1e-4 * np.mean(error**2) + 1e-12
    coefficients, *_ = np.linalg.lstsq(design, np.log(error**2 + floor), rcond=None)
    relative = relative_sd(design, coefficients)
    normalized = np.abs(error) / relative
    z = float(norm.ppf(0.5 + level / 2))
    edges = np.quantile(relative, np.arange(1, BINS) / BINS)
    bins = np.searchsorted(edges, relative, side="right")
    return ErrorModel(
        coefficients=tuple(float(c) for c in coefficients),
        conformal_factor=conformal_quantile(normalized, level) / z,
        level=level,
        subjects=len(designs),
        voxels=len(error),
        bin_edges=tuple(float(edge) for edge in edges),
        bin_factors=tuple(conformal_quantile(normalized[bins == b], level) / z for b in range(BINS)),
        features=tuple(names),
    )
