"""The healthy-control reference, the z-scores and the AD-pattern score's interval, on cases with a known answer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.config import SamplerConfig
from bids_jdam.data.atlas import atlas_on_grid
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.healthy_reference import IMAGE_FILE, HealthyReference
from bids_jdam.data.template import grid_affine
from bids_jdam.errors import InputError
from bids_jdam.evaluate.ad_pattern import fit_pattern_interval, minimum_subjects, pattern_score
from bids_jdam.evaluate.atlas_suvr import META_ROI_INDEX, RegionRow, regional_suvr
from bids_jdam.evaluate.healthy_reference import build_healthy_reference
from bids_jdam.reports.regional_table import write_regional_table
from tests.test_bids_derivatives import anat_input, provenance

SPACING = 4.0
SAMPLER = SamplerConfig(name="heun", steps=18, num_samples=1)


def healthy_subjects(count: int, seed: int = 0) -> list[SubjectVolumes]:
    """PET = 1 + 0.1 x (a subject's offset) in every brain voxel: known voxel and regional mean and SD."""
    labels = np.asarray(atlas_on_grid("AAL3", SPACING))
    offsets = np.random.default_rng(seed).normal(size=count)
    return [
        SubjectVolumes(
            f"{index:02d}",
            "CN",
            labels > 0,
            np.where(labels > 0, 1 + 0.1 * offset, 0).astype(np.float32),
            labels > 0,
            grid_affine(SPACING),
        )  # fmt: skip
        for index, offset in enumerate(offsets)
    ]


def test_the_reference_has_the_subjects_voxel_and_regional_mean_and_sd():
    volumes = healthy_subjects(6)
    offsets = np.array([v.pet[v.brain_mask][0] for v in volumes])
    reference = build_healthy_reference(volumes, SPACING)
    inside = volumes[0].brain_mask
    assert reference.mean[inside] == pytest.approx(offsets.mean(), abs=1e-5)
    assert np.median(reference.sd[inside]) == pytest.approx(offsets.std(ddof=1), rel=0.02)
    meta = reference.region(META_ROI_INDEX)
    assert meta.mean == pytest.approx(offsets.mean(), abs=1e-5) and meta.sd == pytest.approx(offsets.std(ddof=1))
    z = reference.zscore_map(np.where(inside, meta.mean - 2 * meta.sd, 0), inside)
    assert np.median(z[inside]) == pytest.approx(-2.0, abs=0.05) and not z[~inside].any()
    with pytest.raises(InputError, match="at least 3 CN subjects"):
        build_healthy_reference(volumes[:2], SPACING)


def test_the_reference_is_read_back_and_a_changed_file_is_refused(tmp_path):
    reference = build_healthy_reference(healthy_subjects(4), SPACING)
    record = reference.save(tmp_path)
    loaded = HealthyReference.load(tmp_path, record)
    assert np.array_equal(loaded.sd, reference.sd)
    assert [(n.index, n.name) for n in loaded.regions] == [(n.index, n.name) for n in reference.regions]
    assert [n.sd for n in loaded.regions] == pytest.approx([n.sd for n in reference.regions], rel=1e-5)
    assert loaded.subjects == ("00", "01", "02", "03")
    (tmp_path / IMAGE_FILE).write_bytes(b"not a NIfTI")
    with pytest.raises(InputError, match="sha256 does not match"):
        HealthyReference.load(tmp_path, record)


def meta_table(real: float, synthetic: float) -> list[RegionRow]:
    return [RegionRow(META_ROI_INDEX, "AD_metaROI", 100, synthetic, None, real)]


def test_the_pattern_interval_fitted_on_subjects_covers_new_subjects_as_often_as_it_says():
    reference = build_healthy_reference(healthy_subjects(5), SPACING)
    norm = reference.region(META_ROI_INDEX)
    rng = np.random.default_rng(1)

    def tables(count: int) -> list[list[RegionRow]]:
        real = norm.mean + norm.sd * rng.normal(-1, 1, count)
        return [meta_table(r, r + 0.5 * norm.sd * e) for r, e in zip(real, rng.normal(size=count))]

    interval = fit_pattern_interval(tables(200), reference, SAMPLER, ("axial",))
    assert interval.half_width_z == pytest.approx(1.645 * 0.5, rel=0.15) and interval.subjects == 200
    scores = [pattern_score(rows, reference, interval) for rows in tables(1000)]
    covered = [s.lower <= s.real_z <= s.upper for s in scores]
    assert 0.87 <= np.mean(covered) <= 0.93
    assert minimum_subjects(0.9) == 9
    assert fit_pattern_interval(tables(8), reference, SAMPLER, ("axial",)) is None
    assert fit_pattern_interval(tables(9), reference, SAMPLER, ("axial",)) is not None


def test_the_table_gives_each_region_its_healthy_norm_and_hand_computed_z(tmp_path):
    volumes = healthy_subjects(5)
    reference = build_healthy_reference(volumes, SPACING)
    labels = np.asarray(atlas_on_grid("AAL3", SPACING))
    synthetic = np.where(labels > 0, 0.8 + labels / 1000.0, 0.0)
    rows = regional_suvr(synthetic, labels > 0, SPACING)
    score = pattern_score(rows, reference, None, "no interval: test")
    plan = SimpleNamespace(regional_interval=None, interval_reason="no interval: test")
    with ParticipantStaging(tmp_path, "01") as staging:
        table = write_regional_table(anat_input(sub="01"), rows, provenance(), staging, plan, reference, score)
        lines = [line.split("\t") for line in table.read_text().splitlines()]
        sidecar = table.with_suffix(".json").read_text()
    header, by_name = lines[0], {line[1]: dict(zip(lines[0], line)) for line in lines[1:]}
    assert header[-6:] == ["healthy_mean_suvr", "healthy_sd_suvr", "zscore", "zscore_ci90_lower",
                           "zscore_ci90_upper", "real_zscore"]  # fmt: skip
    precuneus = by_name["Precuneus_L"]
    norm = next(n for n in reference.regions if n.name == "Precuneus_L")
    expected = (synthetic[labels == int(precuneus["index"])].mean() - norm.mean) / norm.sd
    assert float(precuneus["zscore"]) == pytest.approx(expected, rel=1e-4)
    assert precuneus["zscore_ci90_lower"] == "n/a" and precuneus["real_zscore"] == "n/a"
    assert float(by_name["AD_metaROI"]["zscore"]) == pytest.approx(score.z, abs=1e-4)
    assert '"ADPatternScore"' in sidecar and "no interval: test" in sidecar
