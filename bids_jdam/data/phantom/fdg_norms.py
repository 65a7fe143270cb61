"""The phantom's healthy FDG pattern and AD pattern on AAL3 region groups (fdg_norms.tsv beside this module).

``uptake`` is the measured mean FDG uptake of each group of AAL3 regions relative to the cerebellar cortex in a
real FDG-PET
average of 28 healthy adults (Shokri-Kojori et al., Nat Commun 10:690, 2019; ``source`` = table), or a phantom
choice (``source`` = phantom). ``activity_uptake`` is the activity the phantom puts in the group so that its
PET measures ``uptake`` (partial_volume.py fits it). ``ad_hypometabolism`` is the fraction of uptake an AD subject
of severity 1 loses,
``age_change_per_decade`` the healthy change per decade of age, ``tissue`` whether the uptake sits in gray matter
only or in all tissue of the region (deep nuclei, which the template's tissue maps label partly as white matter).
docs/phantom.md cites the sources of each column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from bids_jdam.data.atlas import atlas_on_grid, fill_from_nearest, load_atlas
from bids_jdam.data.template import load_template

ATLAS = "AAL3"
REFERENCE_GROUP = "cerebellum_cortex"
NEOCORTEX_GROUP = "frontal_lateral_dorsomedial"  # the subject's cortical GM concentration is this group's level


@dataclass(frozen=True)
class RegionGroup:
    """One row of fdg_norms.tsv."""

    name: str
    uptake: float
    activity_uptake: float
    source: str
    ad_hypometabolism: float
    age_change_per_decade: float
    all_tissue: bool
    aal3_regions: tuple[str, ...]


@lru_cache(maxsize=1)
def region_groups() -> dict[str, RegionGroup]:
    """The groups of fdg_norms.tsv by name."""
    text = (resources.files("bids_jdam.data.phantom") / "fdg_norms.tsv").read_text()
    return {
        row["group"]: RegionGroup(
            name=row["group"],
            uptake=float(row["uptake"]),
            activity_uptake=float(row["activity_uptake"]),
            source=row["source"],
            ad_hypometabolism=float(row["ad_hypometabolism"]),
            age_change_per_decade=float(row["age_change_per_decade"]),
            all_tissue=row["tissue"] == "all",
            aal3_regions=tuple(row["aal3_regions"].split(",")),
        )
        for row in csv.DictReader(text.splitlines(), delimiter="\t")
    }


def group_of_region(region: str) -> tuple[str, str]:
    """(group, hemisphere 'L'/'R'/'') of an AAL3 region name such as ``Precuneus_L``."""
    base, _, side = region.rpartition("_")
    if side not in ("L", "R"):
        base, side = region, ""
    for group in region_groups().values():
        if base in group.aal3_regions:
            return group.name, side
    raise KeyError(f"AAL3 region {region!r} belongs to no group of fdg_norms.tsv")


@lru_cache(maxsize=4)
def phantom_regions(spacing_mm: float) -> np.ndarray:
    """AAL3 labels on the model grid, every brain voxel filled from its nearest region (read-only int16)."""
    labels = fill_from_nearest(atlas_on_grid(ATLAS, spacing_mm), load_template(spacing_mm).brain_mask)
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=4)
def group_masks(spacing_mm: float) -> dict[str, np.ndarray]:
    """Boolean mask of each group on the model grid (brain voxels, after filling)."""
    labels = phantom_regions(spacing_mm)
    atlas = load_atlas(ATLAS)
    members: dict[str, list[int]] = {name: [] for name in region_groups()}
    for index, region in atlas.labels.items():
        members[group_of_region(region)[0]].append(index)
    return {name: np.isin(labels, indices) for name, indices in members.items()}
