"""Coarse regions: every region exists, sits inside the brain, and lies where its name says."""

from __future__ import annotations

import numpy as np
import pytest

from bids_jdam.data.regions import REGION_IDS, coarse_regions, region_mask
from bids_jdam.data.template import load_template


@pytest.mark.parametrize("spacing", [4.0, 2.0])
def test_every_region_is_non_empty_and_inside_the_brain(spacing):
    labels, names = coarse_regions(spacing)
    template = load_template(spacing)
    assert labels.shape == template.shape and labels.dtype == np.int16
    assert set(names.values()) >= {
        "frontal",
        "parietal",
        "temporal",
        "occipital",
        "precuneus_posterior_cingulate",
        "striatum",
        "thalamus",
        "cerebellum",
        "pons",
    }
    for label, name in names.items():
        voxels = labels == label
        assert voxels.sum() * spacing**3 > 300, f"{name} is (nearly) empty"
        assert template.brain_mask[voxels].all(), f"{name} leaves the brain mask"
    assert not labels[~template.brain_mask].any()


def test_regions_lie_where_their_names_say():
    labels, names = coarse_regions(4.0)
    affine = load_template(4.0).affine

    def centroid(name):
        ijk = np.argwhere(labels == REGION_IDS[name]).mean(axis=0)
        return affine[:3, :3] @ ijk + affine[:3, 3]

    assert centroid("frontal")[1] > centroid("parietal")[1] > centroid("occipital")[1]
    assert centroid("cerebellum")[2] < centroid("occipital")[2]
    assert centroid("temporal")[2] < centroid("parietal")[2]
    assert abs(centroid("pons")[0]) < 3 and abs(centroid("precuneus_posterior_cingulate")[0]) < 3


def test_cortical_regions_are_gray_matter():
    labels, _ = coarse_regions(4.0)
    template = load_template(4.0)
    for name in ("frontal", "parietal", "temporal", "occipital"):
        voxels = labels == REGION_IDS[name]
        assert template.gm[voxels].mean() > template.wm[voxels].mean() + 0.3


def test_region_mask_joins_names_and_rejects_unknown_ones():
    joined = region_mask(4.0, "cerebellum+pons")
    assert joined.sum() == region_mask(4.0, "cerebellum").sum() + region_mask(4.0, "pons").sum()
    with pytest.raises(KeyError, match="unknown region 'cerebelum'"):
        region_mask(4.0, "cerebelum")
