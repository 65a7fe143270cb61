"""Fit the single-sample predictive SD model (:mod:`bids_jdam.synthesis.error_model`) on held-out syntheses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.stats import norm

from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.synthesis.error_model import (
    BINS,
    FEATURES,
    HEALTHY_FEATURES,
    LEVEL,
    VIEW_FEATURES,
    ErrorModel,
    features,
    relative_sd,
)


class Case(NamedTuple):
    """One held-out synthesis: what the run had, and the PET it is scored against."""

    mean: np.ndarray
    t1: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    views: np.ndarray | None = None  # the regression mean along each plane, where the method has one


def fit_error_model(
    cases: Sequence[Case | tuple], spacing_mm: float, level: float = LEVEL, healthy: HealthyReference | None = None
) -> ErrorModel:
    """Fit on held-out cases, with the model's healthy-control reference's features where it has one and the
    planes' features where every case has its views; conformal on the same voxels, one factor per fifth of the
    relative map (locally adaptive), and one over all voxels for the record."""
    cases = [Case(*case) for case in cases]
    with_views = [case.views is not None for case in cases]
    if any(with_views) and not all(with_views):
        raise ValueError("either every held-out case has its planes' regression means or none has")
    names = FEATURES + (HEALTHY_FEATURES if healthy is not None else ()) + (VIEW_FEATURES if all(with_views) else ())
    return fit_on_designs([case_design(case, spacing_mm, healthy) for case in cases], names, level)


def case_design(
    case: Case | tuple, spacing_mm: float, healthy: HealthyReference | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One case's design matrix and its errors (reference - mean) inside the mask."""
    case = Case(*case)
    mask = np.asarray(case.mask, dtype=bool)
    error = (np.asarray(case.reference, dtype=np.float64) - np.asarray(case.mean, dtype=np.float64))[mask]
    return features(case.mean, case.t1, mask, spacing_mm, healthy, case.views), error


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
