"""Fit the single-sample predictive SD model (:mod:`bids_jdam.synthesis.error_model`) on held-out syntheses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.synthesis.error_model import BINS, FEATURES, HEALTHY_FEATURES, LEVEL, ErrorModel, features, relative_sd


def fit_error_model(
    cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    spacing_mm: float,
    level: float = LEVEL,
    healthy: HealthyReference | None = None,
) -> ErrorModel:
    """Fit on held-out (synthetic mean, T1w, reference PET, brain mask) cases, with the model's healthy-control
    reference's features where it has one; conformal on the same voxels, one factor per fifth of the relative map
    (locally adaptive), and one over all voxels for the record."""
    designs, errors = [], []
    for mean, t1, reference, mask in cases:
        mask = np.asarray(mask, dtype=bool)
        designs.append(features(mean, t1, mask, spacing_mm, healthy))
        errors.append((np.asarray(reference, dtype=np.float64) - np.asarray(mean, dtype=np.float64))[mask])
    design, error = np.concatenate(designs), np.concatenate(errors)
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
        subjects=len(cases),
        voxels=len(error),
        bin_edges=tuple(float(edge) for edge in edges),
        bin_factors=tuple(conformal_quantile(normalized[bins == b], level) / z for b in range(BINS)),
        features=FEATURES if healthy is None else FEATURES + HEALTHY_FEATURES,
    )
