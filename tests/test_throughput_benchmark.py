"""The throughput benchmark: its FLOP count is the paper network's, and its smoke run times a whole template brain."""

from __future__ import annotations

import json

import pytest

from benchmarks import throughput
from bids_jdam.config import JDAMConfig
from bids_jdam.data.template import load_template
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.models.unet import ScoreUNet


def test_default_network_costs_the_paper_networks_119_gflop_per_slice():
    cfg = JDAMConfig()
    denoiser = build_denoiser(ScoreUNet(cfg.network, cfg.grid.slice_size), cfg.sde).eval()
    assert throughput.flops_per_slice_evaluation(denoiser, cfg.grid.slice_size) / 1e9 == pytest.approx(119.0, rel=0.01)


def test_smoke_run_samples_every_axial_slice_with_brain(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "configure_threads", lambda n: None)  # keep the test session's thread settings
    assert throughput.main(["--smoke", "--device", "cpu", "--plane-sets", "axial", "--results", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("throughput-*.json")
    report = json.loads(result.read_text())
    mask = load_template(4.0).brain_mask
    axial_slices = int(mask.any(axis=(0, 1)).sum())
    (run,) = report["runs"]
    assert run["slices"] == axial_slices and run["network_evaluations"] == 2 * axial_slices
    assert run["seconds"] > 0 and run["network_tflops_per_second"] > 0
    assert report["gflop_per_slice_evaluation"] > 0 and report["precision"] == "fp32"
    assert "| 1 | axial |" in result.with_suffix(".md").read_text()


def test_plane_sets_are_parsed_and_checked():
    assert throughput.plane_set("axial+coronal+sagittal") == ("axial", "coronal", "sagittal")
    for bad in ("axial+axial", "transverse"):
        with pytest.raises(Exception, match="expected distinct planes"):
            throughput.plane_set(bad)
