"""The SD-model selection benchmark's table of held-out maps scored over all subjects' voxels together."""

from benchmarks.error_model_selection import REFERENCES, overall_table


def test_overall_table_has_one_row_per_model_and_reference_with_the_fifths_range():
    overall = {
        "coverage_90": 0.9,
        "reliability": [{"coverage": c} for c in (0.88, 0.9, 0.91, 0.93, 0.95)],
        "rmse_top_over_bottom_fifth": 2.0,
        "ause_relative": 0.6,
        "crps_over_constant_band": 0.98,
        "recalibrated_crps_over_constant_band": 0.97,
        "oracle_crps_over_constant_band": 0.93,
    }
    report = {"variants": {"image": {"subjects": [], "overall": dict.fromkeys(REFERENCES, overall)}}}
    rows = [line for line in overall_table(report) if line.startswith("| image |")]
    assert rows == [
        f"| image | {ref} | 0.900 | 0.880-0.950 | 2.000 | 0.600 | 0.980 | 0.970 | 0.930 |" for ref in REFERENCES
    ]
