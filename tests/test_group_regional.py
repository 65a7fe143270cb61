"""Group level, regional: the regional tables across participants and AD minus CN with its interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_jdam.reports.group_regional import (
    DIFFERENCE_FILE,
    REGIONAL_FILE,
    ad_minus_cn,
    collect_regional_tables,
    write_group_regional,
)

PRECUNEUS = {"AD": [1.10, 1.20, 1.05], "CN": [1.40, 1.30, 1.45, 1.35]}


def write_table(out_dir, subject: str, precuneus: float) -> None:
    folder = out_dir / f"sub-{subject}" / "pet"
    folder.mkdir(parents=True)
    name = f"sub-{subject}_trc-FDG_space-MNI152NLin2009aSym_seg-AAL3_desc-jdam_pet.tsv"
    rows = ["index\tlabel_name\tmean_synthetic_suvr\tmean_real_suvr", f"71\tPrecuneus_L\t{precuneus}\tn/a",
            f"1000\tAD_metaROI\t{precuneus - 0.1}\tn/a"]  # fmt: skip
    (folder / name).write_text("\n".join(rows) + "\n")


def welch(group: list[float], baseline: list[float], level: float = 0.9) -> tuple[float, float, float]:
    """The textbook Welch interval, written out."""
    a, b = np.asarray(group), np.asarray(baseline)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + level) / 2, df) * np.sqrt(va + vb)
    difference = a.mean() - b.mean()
    return difference, difference - half, difference + half


def test_ad_minus_cn_per_region_is_welchs_difference_of_the_images_that_passed_qc(tmp_path):
    images = []
    for diagnosis, values in PRECUNEUS.items():
        for value in values:
            subject = f"{len(images) + 1:02d}"
            write_table(tmp_path, subject, value)
            images.append({"participant_id": f"sub-{subject}", "session": None, "run": None, "diagnosis": diagnosis})
    write_table(tmp_path, "99", 5.0)  # failed QC: not among the images
    regional = collect_regional_tables(tmp_path, pd.DataFrame(images))
    assert len(regional) == 2 * 7 and "sub-99" not in set(regional["participant_id"])
    differences = ad_minus_cn(regional).set_index("label_name")
    expected = welch(PRECUNEUS["AD"], PRECUNEUS["CN"])
    row = differences.loc["Precuneus_L"]
    assert (row["synthetic_ad_minus_cn"], row["synthetic_ci90_lower"], row["synthetic_ci90_upper"]) == pytest.approx(
        expected
    )
    assert row["n_AD"] == 3 and row["n_CN"] == 4 and "real_ad_minus_cn" not in differences.columns
    written = write_group_regional(tmp_path, regional, differences.reset_index())
    assert [p.name for p in written] == [REGIONAL_FILE, DIFFERENCE_FILE]
    assert ad_minus_cn(regional[regional["diagnosis"] == "CN"]).empty  # no AD images: no difference


def test_the_regional_benchmark_counts_covered_pairs_and_says_by_how_much_a_goal_is_missed():
    from benchmarks.regional import regional_scores, verdict

    table = pd.DataFrame(
        {
            "participant_id": ["sub-01"] * 2 + ["sub-02"] * 2,
            "label_name": ["Precuneus_L", "AD_metaROI"] * 2,
            "mean_synthetic_suvr": [1.0, 1.0, 1.0, 1.0],
            "ci90_lower": [0.9, 0.9, 0.9, 0.9],
            "ci90_upper": [1.1, 1.1, 1.1, 1.1],
            "mean_real_suvr": [1.05, 1.2, 0.95, 1.0],
        }
    )
    scores = regional_scores(table)
    assert scores["coverage"] == 0.75 and scores["coverage_per_subject_min"] == 0.5
    assert scores["mae_suvr"] == pytest.approx((0.05 + 0.2 + 0.05 + 0.0) / 4)
    assert verdict(0.75, 0.85, 0.95) == "no (0.100 below)" and verdict(0.9, 0.85, 0.95) == "yes"
