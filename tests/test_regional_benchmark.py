"""The regional benchmark's check of the healthy reference: where the synthetic PET of each group reads."""

import pandas as pd
import pytest

from benchmarks.regional import _synthetic_z_lines, healthy_reference_check
from bids_jdam.evaluate.atlas_suvr import META_ROI_NAME


def _rows(diagnosis: str, synthetic: list[float], real: list[float]) -> list[dict]:
    return [
        {"label_name": name, "diagnosis": diagnosis, "zscore": z, "real_zscore": r}
        for z, r in zip(synthetic, real)
        for name in (META_ROI_NAME, "Precuneus_L")  # another region's z must not count
    ]


def test_synthetic_meta_roi_z_is_reported_per_diagnosis_beside_the_real_one():
    table = pd.DataFrame(_rows("CN", [-1.0, -1.4], [0.2, -0.2]) + _rows("AD", [-2.0, -2.6], [-3.0, -4.0]))
    table.loc[table["label_name"] != META_ROI_NAME, "zscore"] = 9.0
    check = healthy_reference_check(table)
    assert check["cn_subjects"] == 2 and check["mean"] == pytest.approx(0.0)
    assert check["meta_roi_z_by_diagnosis"]["CN"]["synthetic_mean"] == pytest.approx(-1.2)
    assert check["meta_roi_z_by_diagnosis"]["AD"]["real_mean"] == pytest.approx(-3.5)
    lines = _synthetic_z_lines(check["meta_roi_z_by_diagnosis"], lambda value, digits=3: f"{value:.{digits}f}")
    assert "A healthy subject's synthetic PET reads -1.20 z" in lines[-1]
