"""Coarse brain regions on the model grid, drawn in code from MNI coordinates (no atlas ships offline).

Each region is a simple shape in MNI152NLin2009aSym millimetres (planes, boxes, ellipsoids, mirrored across the
midline) intersected with nilearn's brain mask and gray/white-matter maps. They are coarse on purpose: the phantom's
uptake model, the SUVR reference (cerebellum + pons) and the group report's lobe summaries need stable, documented
regions, not an anatomical parcellation. The names below are a public vocabulary; do not rename them.

Shapes are assigned in priority order (deep and reference regions first, lobes last), so regions never overlap.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bids_jdam.data.template import load_template

# Label values are stable: they are written into dseg images and their TSV.
REGION_LABELS: dict[int, str] = {
    1: "frontal",
    2: "parietal",
    3: "temporal",
    4: "occipital",
    5: "precuneus_posterior_cingulate",
    6: "striatum",
    7: "thalamus",
    8: "hippocampus",
    9: "cerebellum",
    10: "pons",
    11: "white_matter",
}
REGION_IDS: dict[str, int] = {name: label for label, name in REGION_LABELS.items()}
SUVR_REFERENCE_REGIONS = ("cerebellum", "pons")
CORTICAL_LOBES = ("frontal", "parietal", "temporal", "occipital")


def _ellipsoid(x, y, z, centre, radii, mirrored: bool = True) -> np.ndarray:
    """Voxels inside an axis-aligned ellipsoid (and its mirror image across x = 0 when ``mirrored``)."""
    cx, cy, cz = centre
    ax = np.abs(x) if mirrored else x
    return ((ax - cx) / radii[0]) ** 2 + ((y - cy) / radii[1]) ** 2 + ((z - cz) / radii[2]) ** 2 <= 1.0


def _shapes(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Region shapes in MNI mm, in priority order; tissue constraints are applied by the caller."""
    tentorium = z < -8.0 + 0.25 * (y + 40.0)  # the cerebellum lies below a plane sloping down to the front
    pons = _ellipsoid(x, y, z, (0.0, -26.0, -31.0), (14.0, 12.0, 13.0), mirrored=False)
    cerebellum = tentorium & (y < -32.0) & (z < -5.0) & ~_ellipsoid(x, y, z, (0.0, -30.0, -30.0), (15.0, 16.0, 40.0))
    thalamus = _ellipsoid(x, y, z, (11.0, -18.0, 7.0), (7.5, 12.0, 8.0))
    striatum = _ellipsoid(x, y, z, (25.0, 3.0, 1.0), (6.5, 16.0, 9.0)) | _ellipsoid(
        x, y, z, (13.0, 12.0, 10.0), (5.5, 11.0, 9.0)
    )
    hippocampus = _ellipsoid(x, y, z, (28.0, -23.0, -13.0), (6.5, 17.0, 7.0))
    precuneus_pcc = (np.abs(x) <= 16.0) & _ellipsoid(x, y, z, (0.0, -55.0, 36.0), (17.0, 27.0, 24.0), mirrored=False)
    central_sulcus = y > -12.0 - 0.25 * np.clip(z, 0.0, None)  # frontal in front of a plane leaning back with height
    temporal = (np.abs(x) >= 26.0) & (y > -72.0) & (y < 28.0) & (z < 6.0 + 0.3 * np.clip(-(y + 15.0), 0.0, None))
    occipital = (y <= -72.0) | ((y <= -62.0) & (z < 10.0))
    frontal = central_sulcus & (z > -32.0) & ~((np.abs(x) < 22.0) & (z < 0.0) & (y < 8.0))  # not the midbrain
    parietal = ~central_sulcus & (z > 10.0)
    return [
        ("pons", pons),
        ("cerebellum", cerebellum),
        ("thalamus", thalamus),
        ("striatum", striatum),
        ("hippocampus", hippocampus),
        ("precuneus_posterior_cingulate", precuneus_pcc),
        ("occipital", occipital & ~tentorium),
        ("temporal", temporal),
        ("frontal", frontal),
        ("parietal", parietal),
    ]


@lru_cache(maxsize=4)
def coarse_regions(spacing_mm: float) -> tuple[np.ndarray, dict[int, str]]:
    """Label volume (int16, 0 = background) on the model grid at ``spacing_mm`` and its label -> name table.

    Deep and reference regions (pons, cerebellum, thalamus, striatum, hippocampus) take the voxels of their shape
    that hold tissue (GM + WM >= 0.5); cortical regions take gray-matter voxels (GM >= 0.35 and GM >= WM); what
    remains with WM >= 0.5 is ``white_matter``. Everything is inside the template's brain mask.
    """
    template = load_template(spacing_mm)
    ijk = np.indices(template.shape, dtype=np.float32)
    x, y, z = (template.affine[axis, axis] * ijk[axis] + template.affine[axis, 3] for axis in range(3))
    brain = template.brain_mask
    tissue = brain & (template.gm + template.wm >= 0.5)
    cortex = brain & (template.gm >= 0.35) & (template.gm >= template.wm)
    deep = {"pons", "cerebellum", "thalamus", "striatum", "hippocampus"}

    labels = np.zeros(template.shape, dtype=np.int16)
    for name, shape in _shapes(x, y, z):
        free = labels == 0
        labels[shape & free & (tissue if name in deep else cortex)] = REGION_IDS[name]
    labels[(labels == 0) & brain & (template.wm >= 0.5)] = REGION_IDS["white_matter"]
    labels.setflags(write=False)
    return labels, dict(REGION_LABELS)


def region_mask(spacing_mm: float, name: str) -> np.ndarray:
    """Boolean mask of one named region (or of a ``+``-joined union such as ``cerebellum+pons``)."""
    labels, _ = coarse_regions(spacing_mm)
    unknown = [part for part in name.split("+") if part not in REGION_IDS]
    if unknown:
        raise KeyError(f"unknown region {unknown[0]!r}; known regions: {', '.join(REGION_IDS)}")
    return np.isin(labels, [REGION_IDS[part] for part in name.split("+")])
