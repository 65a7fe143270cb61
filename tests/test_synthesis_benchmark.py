"""The synthesis benchmark's summary of the uncertainty-map goals: who meets each, and by how much the rest miss."""

import math

import pytest

from benchmarks.synthesis import FIFTH_COVERAGE, FIFTHS_WORDS, RANKING_GOALS, Goal, goal_summary

REFERENCES = ("noise_free_truth", "real_pet")


def test_goal_says_whether_a_score_meets_it_and_by_how_much_it_misses():
    coverage = Goal(0.85, 0.95)
    assert coverage(0.9) and not coverage(0.97)
    assert coverage.miss(0.97) == pytest.approx(0.02)
    assert coverage.miss(0.80) == pytest.approx(0.05)
    assert Goal(low=0.3).miss(0.5) == 0.0


def _ranking(coverage: float, fifths: list[float]) -> dict:
    """Scores that meet every goal at its bound, but for the given coverage overall and per SD fifth."""
    scores = {key: goal.low if math.isfinite(goal.low) else goal.high for key, goal, _ in RANKING_GOALS}
    return {**scores, "coverage_90": coverage, "reliability": [{"coverage": c} for c in fifths]}


def _subject(label: str, coverage: float, fifths: list[float]) -> dict:
    maps = {"predictive": {ref: {"ranking": _ranking(coverage, fifths)} for ref in REFERENCES}}
    return {"subject": label, "cases": [{"uncertainty_maps": maps}, {"uncertainty_maps": {"sampling": {}}}]}


def test_summary_counts_subjects_and_names_the_farthest_miss():
    wide_top_fifth = [0.9] * 4 + [FIFTH_COVERAGE.high + 0.02]
    subjects = [_subject("01", 0.90, [0.9] * 5), _subject("02", 0.97, [0.9] * 5), _subject("03", 0.96, wide_top_fifth)]
    report = {"subjects": subjects}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in goal_summary(report) if line.startswith("| ")}
    assert rows["90 % coverage in [0.85, 0.95]"].count("1/3; farthest: subject 02 0.970, 0.020 above 0.95") == 2
    assert "2/3; farthest: subject 03 0.990, 0.020 above 0.97" in rows[FIFTHS_WORDS]
    assert rows["AUSE / random <= 0.7"].count("| 3/3") == 2  # met on every subject against both references


def test_summary_gives_the_overall_scores_and_their_misses():
    overall = {
        **_ranking(0.93, [0.9] * 5),
        "crps_over_constant_band": 0.99,
        "recalibrated_crps_over_constant_band": 0.98,
        "oracle_crps_over_constant_band": 0.94,
    }
    del overall["correlation_smoothed"]  # pooled scores have no smoothed correlation
    report = {"subjects": [_subject("01", 0.9, [0.9] * 5)], "default_map_overall": dict.fromkeys(REFERENCES, overall)}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in goal_summary(report) if line.startswith("| ")}
    assert rows["90 % coverage in [0.85, 0.95]"].endswith("| 0.930* | 0.930* |")
    reachable = "0.990 (0.040 above 0.95); widths made right 0.980, oracle 0.940"
    assert rows["CRPS / constant band <= 0.95"].endswith(f"| {reachable} | {reachable} |")
    assert rows[r"smoothed SD-\|error\| correlation >= 0.3"].endswith("| per subject only | per subject only |")
