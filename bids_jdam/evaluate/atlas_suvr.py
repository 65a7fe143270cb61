"""Regional SUVR on a standard atlas: what FDG users read (Clinica's atlas statistics, the AD meta-ROI).

Each AAL3 region (atlas labels on the model grid, restricted to the image's brain mask) gets the mean of the
synthetic PET, the mean of its SD map where one exists, and the mean of the real PET where the image has one; the
AD meta-ROI of Landau et al. (Neurobiol Aging 32:1207, 2011: angular gyri, posterior cingulate, inferior temporal
gyri) is one more row, on the app's SUVR scale (the model's reference region).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_jdam.data.atlas import DEFAULT_ATLAS, atlas_on_grid, load_atlas

ATLAS = DEFAULT_ATLAS
META_ROI_INDEX = 1000  # outside the atlas's own indices
META_ROI_NAME = "AD_metaROI"
META_ROI_REGIONS = (
    "Angular_L",
    "Angular_R",
    "Cingulate_Post_L",
    "Cingulate_Post_R",
    "Temporal_Inf_L",
    "Temporal_Inf_R",
)


@dataclass(frozen=True)
class RegionRow:
    """One region's voxel count and mean values (None where the image has no such map)."""

    index: int
    name: str
    voxels: int
    synthetic_suvr: float
    synthetic_sd: float | None
    real_suvr: float | None


def regional_suvr(
    synthetic: np.ndarray,
    brain_mask: np.ndarray,
    spacing_mm: float,
    *,
    sd_map: np.ndarray | None = None,
    real: np.ndarray | None = None,
) -> list[RegionRow]:
    """Rows for every atlas region with a voxel inside ``brain_mask``, then the AD meta-ROI."""
    atlas = load_atlas(ATLAS)
    labels = np.where(brain_mask, atlas_on_grid(ATLAS, spacing_mm), 0)
    regions = [(index, name, labels == index) for index, name in sorted(atlas.labels.items())]
    meta = np.isin(labels, [atlas.index_of(name) for name in META_ROI_REGIONS])
    regions.append((META_ROI_INDEX, META_ROI_NAME, meta))
    return [_row(index, name, voxels, synthetic, sd_map, real) for index, name, voxels in regions if voxels.any()]


def _row(
    index: int, name: str, voxels: np.ndarray, synthetic: np.ndarray, sd_map: np.ndarray | None, real: np.ndarray | None
) -> RegionRow:
    def mean(image: np.ndarray | None) -> float | None:
        return None if image is None else float(image[voxels].mean())

    return RegionRow(
        index=index,
        name=name,
        voxels=int(voxels.sum()),
        synthetic_suvr=float(synthetic[voxels].mean()),
        synthetic_sd=mean(sd_map),
        real_suvr=mean(real),
    )
