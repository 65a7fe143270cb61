"""The quality benchmark's statistics (t-interval, paired Wilcoxon) and its inversion of the phantom's transform."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage

from benchmarks.quality_data import template_points_in_scanner
from benchmarks.quality_stats import paired_comparison, summarize, t_interval


def test_t_interval_matches_the_textbook_formula():
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.7764: half-width 2.7764 * 1.5811 / sqrt(5) = 1.9632
    low, high = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert low == pytest.approx(3 - 1.9632, abs=1e-3) and high == pytest.approx(3 + 1.9632, abs=1e-3)
    assert t_interval([1.0]) is None


def test_summary_is_over_subjects():
    summary = summarize({"01": 20.0, "02": 22.0, "03": 24.0})
    assert summary["mean"] == pytest.approx(22.0)
    assert summary["n_subjects"] == 3
    assert summary["ci95"][0] < 22.0 < summary["ci95"][1]


def test_paired_wilcoxon_detects_a_consistent_gain_and_nothing_else():
    rng = np.random.default_rng(0)
    baseline = {f"{i:02d}": float(v) for i, v in enumerate(rng.normal(20, 2, 12))}
    better = {s: v + 1.0 + float(rng.normal(0, 0.1)) for s, v in baseline.items()}
    gain = paired_comparison(better, baseline)
    assert gain["p_value"] < 0.01 and gain["mean_difference"] == pytest.approx(1.0, abs=0.1)
    assert gain["ci95_difference"][0] > 0 and gain["subjects_above_baseline"] == 12
    loss = paired_comparison(baseline, better)
    assert loss["p_value"] == pytest.approx(gain["p_value"]) and loss["mean_difference"] < 0
    noise = paired_comparison({s: v + float(rng.normal(0, 1)) for s, v in baseline.items()}, baseline)
    assert noise["p_value"] > 0.05
    same = paired_comparison(baseline, baseline)
    assert same["p_value"] is None and same["mean_difference"] == 0


def test_inverse_of_the_phantom_transform_solves_its_convention():
    """q = inv(A) (p + u(p)): the scanner points found for template points must satisfy it to a micrometre."""
    grid = np.indices((20, 24, 20), dtype=np.float64)
    field = np.stack([3.0 * np.sin(grid[1] / 4.0), 2.0 * np.cos(grid[0] / 5.0), 2.5 * np.sin(grid[2] / 3.0)], -1)
    affine = np.diag([10.0, 10.0, 10.0, 1.0])
    affine[:3, 3] = -100.0
    displacement = nib.Nifti1Image(field[:, :, :, None, :].astype(np.float32), affine)
    rotation = np.array([[0.99, -0.1, 0, 5.0], [0.1, 0.99, 0, -3.0], [0, 0, 1.02, 2.0], [0, 0, 0, 1]])
    q = np.random.default_rng(1).uniform(-60, 60, (50, 3))
    p = template_points_in_scanner({"TemplateToScannerAffine": rotation.tolist()}, displacement, q)
    ijk = apply_affine(np.linalg.inv(affine), p).T
    u = np.stack([ndimage.map_coordinates(field[..., c], ijk, order=1, mode="nearest") for c in range(3)], 1)
    assert np.abs(apply_affine(np.linalg.inv(rotation), p + u) - q).max() < 1e-3


@pytest.mark.slow
def test_smoke_run_with_two_jobs_scores_every_method(tmp_path):
    """The whole benchmark at tiny settings, two methods at a time: every method trained, scored and compared."""
    import json

    from benchmarks.quality import METHODS, main

    assert main(["--smoke", "--threads", "1", "--jobs", "2", "--work", str(tmp_path)]) == 0
    results = json.loads(next(tmp_path.glob("quality-smoke-*.json")).read_text())
    assert results["complete"] and list(results["training"]) == list(METHODS)
    expected = {
        "jdam-preconditioned-1",
        "jdam-preconditioned-k2",
        "jdam-paper-1",
        "sde-unconditional-1",
        "cyclegan",
        "unet-l1",
        "jdam-residual-1",
        "jdam-residual-k2",
    }
    for label in ("3T", "7T"):
        assert set(results[label]) == expected
        assert all(row["psnr_db"]["n_subjects"] == 2 for row in results[label].values())
        assert set(results["comparisons"][label]["jdam-preconditioned-k2"]) == expected - {
            "jdam-preconditioned-1",
            "jdam-preconditioned-k2",
        }


def test_a_labelled_run_writes_beside_the_run_of_every_method():
    from benchmarks.quality import parse_args, results_name

    assert results_name(parse_args([])) == "quality"
    assert results_name(parse_args(["--label", "default", "--methods", "jdam-residual"])) == "quality-default"
    assert results_name(parse_args(["--smoke", "--label", "default"])) == "quality-smoke"
