"""A predictive SD map for a single synthesis: where the mean image is likely wrong, from what the run already has.

One sample gives no spread, yet the error of the mean is not everywhere the same: it is larger at the brain's edge
(where brain masks and registrations disagree), where the synthetic PET or the T1w change fast (cortex next to
white matter and CSF, where partial volume and small misregistration matter), where uptake is high and towards the
ends of the slice stack. Where the model directory holds a healthy-control reference
(:mod:`bids_jdam.data.healthy_reference`), two more features say where the error is in the population: the healthy
subjects' SD of uptake (where uptake varies between people, the T1w explains less of it) and how far the synthetic
PET departs from the healthy mean (the model understates the disease effects it sees, so a departure it predicts
is one it likely underpredicts). Where the method has a one-evaluation regression mean (the residual method's U-Net),
two more say where the network itself is unsure: how much that mean disagrees between the axial, coronal and
sagittal planes (each plane sees the brain differently, and they disagree where the T1w underdetermines the PET),
and how far the run's sample departs from the three planes' mean (the sampled residual adds to the error where it
is large). The model regresses the log squared error of held-out subjects' synthetic PET on those
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

from bids_jdam.data.healthy_reference import HealthyReference

LEVEL = 0.9
BINS = 5  # the relative map's fifths, each with its own conformal factor
EDGE_SCALES_MM = (2.0, 6.0, 12.0)  # how fast the edge features decay inward
LOCAL_SIGMA_MM = 4.0  # the scale of the local gradients, curvature and spread
VIEW_VARIANCE_FLOOR = 1e-4  # SUVR^2 (an SD of 0.01): planes that agree closer than that agree
# SUVR^2, about the squared error of the mean (an SD of 0.1): the sampled residual r adds r^2 to it, so the log of
# their sum grows with r only where r is larger than the mean's own error, and never faster than log r^2
DEPARTURE_FLOOR = 1e-2
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
HEALTHY_FEATURES = ("healthy_sd_log", "healthy_departure")  # with a healthy-control reference
VIEW_FEATURES = ("view_disagreement_log", "sample_departure_log")  # with the regression mean along each plane
VIEW_PLANES = ("axial", "coronal", "sagittal")
FEATURE_SETS = tuple(FEATURES + healthy + views for healthy in ((), HEALTHY_FEATURES) for views in ((), VIEW_FEATURES))


def _smoothed(image: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> np.ndarray:
    return ndimage.gaussian_filter(np.where(mask, image, 0).astype(np.float64), sigma_voxels)


def _gradient_magnitude(image: np.ndarray, spacing_mm: float) -> np.ndarray:
    return np.sqrt(sum(g**2 for g in np.gradient(image, spacing_mm)))


def features(
    mean: np.ndarray,
    t1: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: float,
    healthy: HealthyReference | None = None,
    views: np.ndarray | None = None,
) -> np.ndarray:
    """(voxels inside the mask, features) design matrix of the synthetic mean image and its T1w (model grid, axial
    slices along the last axis): :data:`FEATURES`, then :data:`HEALTHY_FEATURES` where ``healthy`` is given, then
    :data:`VIEW_FEATURES` where ``views`` (the regression mean along each of :data:`VIEW_PLANES`) are."""
    mask = np.asarray(brain_mask, dtype=bool)
    sigma = LOCAL_SIGMA_MM / spacing_mm
    columns = [_image_features(mean, t1, mask, spacing_mm)]
    if healthy is not None:
        columns += _healthy_features(mean, mask, healthy, sigma)
    if views is not None:
        columns += _view_features(mean, views, mask, sigma)
    return np.column_stack(columns)


def _healthy_features(
    mean: np.ndarray, mask: np.ndarray, healthy: HealthyReference, sigma_voxels: float
) -> list[np.ndarray]:
    """log of the healthy SD (smoothed; its median where the reference has none) and |smoothed z| of ``mean``."""
    known = healthy.sd > 0
    sd = _smoothed_within(healthy.sd, known, sigma_voxels)
    sd = np.where(sd > 0, sd, np.median(healthy.sd[known]))
    departure = np.abs(_smoothed_within(healthy.zscore_map(np.asarray(mean, np.float32), mask), mask, sigma_voxels))
    return [np.log(sd[mask]), departure[mask]]


def _view_features(mean: np.ndarray, views: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> list[np.ndarray]:
    """log of the planes' variance and of the sample's squared departure from the planes' mean (both smoothed like
    the other local features, so that the map stays a map rather than the sample's own noise; floored)."""
    views = np.asarray(views, dtype=np.float64)
    if views.shape != (len(VIEW_PLANES), *mask.shape):
        raise ValueError(f"views must be {len(VIEW_PLANES)} volumes of shape {mask.shape}, got {views.shape}")
    variance = _smoothed_within(views.var(axis=0), mask, sigma_voxels)
    departure = _smoothed_within((np.asarray(mean, dtype=np.float64) - views.mean(axis=0)) ** 2, mask, sigma_voxels)
    return [np.log(variance[mask] + VIEW_VARIANCE_FLOOR), np.log(departure[mask] + DEPARTURE_FLOOR)]


def _smoothed_within(image: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Gaussian smoothing that averages over ``mask`` only (0 where the mask is out of reach)."""
    weight = _smoothed(np.ones(mask.shape), mask, sigma_voxels)
    return np.where(weight > 1e-3, _smoothed(image, mask, sigma_voxels) / np.maximum(weight, 1e-3), 0.0)


def _image_features(mean: np.ndarray, t1: np.ndarray, mask: np.ndarray, spacing_mm: float) -> np.ndarray:
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
    ``features`` are one of :data:`FEATURE_SETS`: :data:`FEATURES`, with :data:`HEALTHY_FEATURES` for a model with a
    healthy reference and :data:`VIEW_FEATURES` for one fitted with the planes' regression means.
    """

    coefficients: tuple[float, ...]
    conformal_factor: float
    level: float
    subjects: int
    voxels: int
    bin_edges: tuple[float, ...] = ()
    bin_factors: tuple[float, ...] = ()
    features: tuple[str, ...] = FEATURES

    @property
    def uses_healthy_reference(self) -> bool:
        return set(HEALTHY_FEATURES) <= set(self.features)

    @property
    def uses_views(self) -> bool:
        return set(VIEW_FEATURES) <= set(self.features)

    def predictive_sd(
        self,
        mean: np.ndarray,
        t1: np.ndarray,
        brain_mask: np.ndarray,
        spacing_mm: float,
        healthy: HealthyReference | None = None,
        views: np.ndarray | None = None,
    ) -> np.ndarray:
        """The predictive SD map of ``mean`` (0 outside the mask): mean +- 1.645 SD is its central 90 % interval.
        ``healthy`` (the model's healthy reference) and ``views`` (the regression mean along each of
        :data:`VIEW_PLANES`) are required where the model was fitted with them."""
        if self.uses_healthy_reference and healthy is None:
            raise ValueError("this single-sample SD model was fitted with a healthy-control reference; pass it")
        if self.uses_views and views is None:
            raise ValueError("this single-sample SD model was fitted with the planes' regression means; pass them")
        mask = np.asarray(brain_mask, dtype=bool)
        design = features(
            mean,
            t1,
            mask,
            spacing_mm,
            healthy if self.uses_healthy_reference else None,
            views if self.uses_views else None,
        )
        relative = relative_sd(design, self.coefficients)
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = self.factors(relative) * relative
        return out

    def factors(self, relative: np.ndarray) -> np.ndarray | float:
        """The conformal factor of each voxel's fifth of the relative map (the global one without fifths)."""
        if not self.bin_factors:
            return self.conformal_factor
        return np.asarray(self.bin_factors)[np.searchsorted(np.asarray(self.bin_edges), relative, side="right")]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorModel:
        fields = {key: value for key, value in data.items() if key != "features"}
        if data.get("features") not in [list(names) for names in FEATURE_SETS]:
            raise ValueError(f"error model features {data.get('features')} are not a set this version computes")
        if len(data.get("coefficients", ())) != len(data["features"]):
            raise ValueError("error model needs one coefficient per feature")
        if len(fields.get("bin_factors", ())) != len(fields.get("bin_edges", ())) + (
            1 if fields.get("bin_factors") else 0
        ):
            raise ValueError("error model bin_factors must be one more than bin_edges")
        tuples = {key: tuple(data.get(key, ())) for key in ("coefficients", "bin_edges", "bin_factors", "features")}
        return cls(**{**fields, **tuples})


def relative_sd(design: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    return np.exp(0.5 * np.clip(design @ np.asarray(coefficients), -30.0, 30.0))
