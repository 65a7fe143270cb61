"""A predictive SD map for a single synthesis: where the mean image is likely wrong, from what the run already has.

One sample gives no spread, yet the error of the mean is not everywhere the same: it is larger at the brain's edge
(where brain masks and registrations disagree), where the synthetic PET or the T1w change fast (cortex next to
white matter and CSF, where partial volume and small misregistration matter), where uptake is high and towards the
ends of the slice stack. The model regresses the log squared error of held-out subjects' synthetic PET on those
features (least squares); its exponential is a relative map. Split-conformal factors on the normalized scores
|error| / map, one per fifth of the relative map (locally adaptive: the regression may under- or overstate how
fast the error grows, so one global factor would over-cover the quiet fifths and under-cover the busy ones), make
mean +- 1.645 SD the central 90 % interval within each fifth on those subjects
(:mod:`bids_jdam.evaluate.single_sample_sd` fits it, with the regional interval, on the same held-out syntheses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

LEVEL = 0.9
BINS = 5  # the relative map's fifths, each with its own conformal factor
EDGE_SCALES_MM = (2.0, 6.0, 12.0)  # how fast the edge features decay inward
LOCAL_SIGMA_MM = 4.0  # the scale of the local gradients, curvature and spread
FEATURES = (
    "constant",
    "edge_2mm",
    "edge_6mm",
    "edge_12mm",
    "pet_gradient",
    "pet",
    "pet_laplacian",
    "pet_local_sd",
    "t1w_gradient",
    "t1w",
    "stack_position",
    "stack_position_squared",
)


def _smoothed(image: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> np.ndarray:
    return ndimage.gaussian_filter(np.where(mask, image, 0).astype(np.float64), sigma_voxels)


def _gradient_magnitude(image: np.ndarray, spacing_mm: float) -> np.ndarray:
    return np.sqrt(sum(g**2 for g in np.gradient(image, spacing_mm)))


def features(mean: np.ndarray, t1: np.ndarray, brain_mask: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(voxels inside the mask, len(FEATURES)) design matrix of the synthetic mean image and its T1w (model grid,
    axial slices along the last axis)."""
    mask = np.asarray(brain_mask, dtype=bool)
    sigma = LOCAL_SIGMA_MM / spacing_mm
    depth_mm = ndimage.distance_transform_edt(mask) * spacing_mm
    pet, t1w = np.asarray(mean, dtype=np.float64), np.asarray(t1, dtype=np.float64)
    pet_smooth = _smoothed(pet, mask, sigma)
    local_sd = np.sqrt(np.maximum(_smoothed(pet**2, mask, sigma) - pet_smooth**2, 0.0))
    laplacian = np.abs(ndimage.gaussian_laplace(np.where(mask, pet, 0.0), sigma))
    position = np.broadcast_to(np.arange(mask.shape[-1]) / mask.shape[-1], mask.shape)[mask]
    columns = [np.ones(int(mask.sum()))]
    columns += [np.exp(-depth_mm[mask] / scale) for scale in EDGE_SCALES_MM]
    columns += [
        _gradient_magnitude(pet_smooth, spacing_mm)[mask],
        pet[mask],
        laplacian[mask],
        local_sd[mask],
        _gradient_magnitude(_smoothed(t1w, mask, sigma), spacing_mm)[mask],
        t1w[mask],
        position,
        position**2,
    ]
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class ErrorModel:
    """Coefficients of the log squared error on :data:`FEATURES` and the conformal factors to a predictive SD.

    ``bin_edges`` split the relative map into fifths (on the held-out voxels) and ``bin_factors`` hold each fifth's
    factor; a card fitted before the fifths has neither and uses the one ``conformal_factor`` everywhere.
    """

    coefficients: tuple[float, ...]
    conformal_factor: float
    level: float
    subjects: int
    voxels: int
    bin_edges: tuple[float, ...] = ()
    bin_factors: tuple[float, ...] = ()

    def predictive_sd(self, mean: np.ndarray, t1: np.ndarray, brain_mask: np.ndarray, spacing_mm: float) -> np.ndarray:
        """The predictive SD map of ``mean`` (0 outside the mask): mean +- 1.645 SD is its central 90 % interval."""
        mask = np.asarray(brain_mask, dtype=bool)
        relative = relative_sd(features(mean, t1, mask, spacing_mm), self.coefficients)
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = self.factors(relative) * relative
        return out

    def factors(self, relative: np.ndarray) -> np.ndarray | float:
        """The conformal factor of each voxel's fifth of the relative map (the global one without fifths)."""
        if not self.bin_factors:
            return self.conformal_factor
        return np.asarray(self.bin_factors)[np.searchsorted(np.asarray(self.bin_edges), relative, side="right")]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(FEATURES)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        fields = {key: value for key, value in data.items() if key != "features"}
        if data.get("features") != list(FEATURES):
            raise ValueError(f"error model features {data.get('features')} are not {list(FEATURES)}")
        if len(fields.get("bin_factors", ())) != len(fields.get("bin_edges", ())) + (
            1 if fields.get("bin_factors") else 0
        ):
            raise ValueError("error model bin_factors must be one more than bin_edges")
        tuples = {key: tuple(fields.get(key, ())) for key in ("coefficients", "bin_edges", "bin_factors")}
        return cls(**{**fields, **tuples})


def relative_sd(design: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    return np.exp(0.5 * np.clip(design @ np.asarray(coefficients), -30.0, 30.0))
