"""A predictive SD map for a single synthesis: where the mean image is likely wrong, from what the run already has.

One sample gives no spread, yet the error of the mean is not everywhere the same: it is larger at the brain's edge
(where brain masks and registrations disagree), where the synthetic PET changes fast (cortex next to white matter
and CSF, where partial volume and small misregistration matter) and where uptake is high. The model regresses the
log squared error of held-out subjects' synthetic PET on those features (least squares); its exponential is a
relative map, and one split-conformal factor on the normalized scores |error| / map makes mean +- 1.645 SD the
central 90 % interval on those subjects. Fitted with the regional interval, on the same held-out syntheses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import norm

LEVEL = 0.9
SINGLE_SAMPLE_SD = "single_sample_sd"  # its key in the model card
EDGE_SCALES_MM = (2.0, 6.0)  # how fast the edge features decay inward
GRADIENT_SIGMA_MM = 4.0
FEATURES = ("constant", "edge_2mm", "edge_6mm", "gradient", "uptake")


def features(mean: np.ndarray, brain_mask: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(voxels inside the mask, len(FEATURES)) design matrix of the synthetic mean image."""
    mask = np.asarray(brain_mask, dtype=bool)
    depth_mm = ndimage.distance_transform_edt(mask) * spacing_mm
    smoothed = ndimage.gaussian_filter(np.where(mask, mean, 0).astype(np.float64), GRADIENT_SIGMA_MM / spacing_mm)
    gradient = np.sqrt(sum(g**2 for g in np.gradient(smoothed, spacing_mm)))
    columns = [np.ones(int(mask.sum()))]
    columns += [np.exp(-depth_mm[mask] / scale) for scale in EDGE_SCALES_MM]
    columns += [gradient[mask], np.asarray(mean, dtype=np.float64)[mask]]
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class ErrorModel:
    """Coefficients of the log squared error on :data:`FEATURES` and the conformal factor to a predictive SD."""

    coefficients: tuple[float, ...]
    conformal_factor: float
    level: float
    subjects: int
    voxels: int

    def predictive_sd(self, mean: np.ndarray, brain_mask: np.ndarray, spacing_mm: float) -> np.ndarray:
        """The predictive SD map of ``mean`` (0 outside the mask): mean +- 1.645 SD is its central 90 % interval."""
        mask = np.asarray(brain_mask, dtype=bool)
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = self.conformal_factor * _relative_sd(features(mean, mask, spacing_mm), self.coefficients)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(FEATURES)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        fields = {key: value for key, value in data.items() if key != "features"}
        if data.get("features") != list(FEATURES):
            raise ValueError(f"error model features {data.get('features')} are not {list(FEATURES)}")
        return cls(**{**fields, "coefficients": tuple(fields["coefficients"])})


def _relative_sd(design: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    return np.exp(0.5 * np.clip(design @ np.asarray(coefficients), -30.0, 30.0))


def fit_error_model(cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], spacing_mm: float,
                    level: float = LEVEL) -> ErrorModel:
    """Fit on held-out (synthetic mean, reference PET, brain mask) cases; conformal on the same voxels."""
    designs, errors = [], []
    for mean, reference, mask in cases:
        mask = np.asarray(mask, dtype=bool)
        designs.append(features(mean, mask, spacing_mm))
        errors.append((np.asarray(reference, dtype=np.float64) - np.asarray(mean, dtype=np.float64))[mask])
    design, error = np.concatenate(designs), np.concatenate(errors)
    floor = 1e-4 * np.mean(error**2) + 1e-12
    coefficients, *_ = np.linalg.lstsq(design, np.log(error**2 + floor), rcond=None)
    normalized = np.abs(error) / _relative_sd(design, coefficients)
    rank = min(int(np.ceil((len(normalized) + 1) * level)), len(normalized)) - 1
    factor = float(np.sort(normalized)[rank] / norm.ppf(0.5 + level / 2))
    return ErrorModel(coefficients=tuple(float(c) for c in coefficients), conformal_factor=factor, level=level,
                      subjects=len(cases), voxels=len(error))
