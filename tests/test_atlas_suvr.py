import numpy as np

from bids_jdam.data.atlas import atlas_on_grid, load_atlas
from bids_jdam.data.template import grid_shape
from bids_jdam.evaluate.atlas_suvr import META_ROI_INDEX, META_ROI_REGIONS, regional_suvr


def test_regional_means_follow_the_atlas_and_the_meta_roi_pools_its_regions():
    labels = np.asarray(atlas_on_grid("AAL3", 4.0))
    atlas = load_atlas("AAL3")
    synthetic = labels.astype(np.float32)  # each region's mean is its own index
    mask = np.ones(grid_shape(4.0), bool)
    rows = {row.index: row for row in regional_suvr(synthetic, mask, 4.0, real=2 * synthetic)}
    for index in (atlas.index_of("Precuneus_L"), atlas.index_of("Thal_AV_R")):
        if index in rows:
            assert rows[index].synthetic_suvr == index and rows[index].real_suvr == 2 * index
            assert rows[index].voxels == int((labels == index).sum()) and rows[index].synthetic_sd is None
    meta = np.isin(labels, [atlas.index_of(name) for name in META_ROI_REGIONS])
    assert rows[META_ROI_INDEX].voxels == int(meta.sum())
    assert np.isclose(rows[META_ROI_INDEX].synthetic_suvr, synthetic[meta].mean())


def test_regions_outside_the_brain_mask_are_left_out():
    shape = grid_shape(4.0)
    mask = np.zeros(shape, bool)
    mask[: shape[0] // 2] = True  # one hemisphere (RAS: x < midline)
    rows = regional_suvr(np.ones(shape, np.float32), mask, 4.0)
    names = {row.name for row in rows}
    assert any(name.endswith("_R") for name in names) != any(name.endswith("_L") for name in names)
