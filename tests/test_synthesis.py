"""Whole-volume synthesis: exact reassembly, batch-size independence, K samples, and the inference wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_jdam.config import NetworkConfig, SamplerConfig, SDEConfig
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.models.unet import ScoreUNet
from bids_jdam.synthesis import volume
from bids_jdam.synthesis.inference import InferenceDenoiser, resolve_precision
from bids_jdam.synthesis.volume import batch_for_memory, default_batch_size, synthesize_volume

SHAPE = (12, 14, 10)
SLICE = 16


def _volume_and_mask() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0.1, 1.0, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 3:12, 2:8] = True
    return t1, mask


def _returns_the_mri(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """A denoiser whose answer is its condition: synthesis must then give back the input volume."""
    return cond.expand_as(x)


def _noisy_denoiser(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Keeps part of x, so the result depends on each slice's noise (a stand-in for a real posterior)."""
    s = sigma.reshape(-1, 1, 1, 1)
    return (cond + x * s / (1 + s)) / (1 + s)


def _synthesize(fn, t1, mask, **kwargs):
    sampler = SamplerConfig(name=kwargs.pop("name", "heun"), steps=4, num_samples=kwargs.pop("k", 1), seed=3)
    return synthesize_volume(
        fn,
        t1,
        mask,
        VESDE(0.01, 5.0),
        sampler,
        image=kwargs.pop("image", "sub-01"),
        slice_size=SLICE,
        progress=False,
        **kwargs,
    )


@pytest.mark.parametrize("planes", [("axial",), ("axial", "coronal", "sagittal")])
def test_slices_are_reassembled_exactly_into_the_volume(planes):
    t1, mask = _volume_and_mask()
    result = _synthesize(_returns_the_mri, t1, mask, planes=planes)
    np.testing.assert_allclose(result.mean, t1 * mask, atol=1e-6)
    assert set(result.per_plane) == set(planes)


def test_result_does_not_depend_on_the_batch_size():
    t1, mask = _volume_and_mask()
    a = _synthesize(_noisy_denoiser, t1, mask, batch_size=1, name="pc")
    b = _synthesize(_noisy_denoiser, t1, mask, batch_size=7, name="pc")
    np.testing.assert_array_equal(a.mean, b.mean)


def test_out_of_memory_halves_the_batch_and_loses_no_slice():
    """A CUDA out-of-memory error retries the same slices with half the batch; the volume is unchanged."""
    t1, mask = _volume_and_mask()
    calls = []

    def runs_out_of_memory_above_three_slices(x, sigma, cond):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return _noisy_denoiser(x, sigma, cond)

    result = _synthesize(runs_out_of_memory_above_three_slices, t1, mask, batch_size=12, name="pc")
    assert result.batch_size == 3 and max(calls) > 3  # a larger batch was tried first
    reference = _synthesize(_noisy_denoiser, t1, mask, batch_size=3, name="pc")
    np.testing.assert_array_equal(result.mean, reference.mean)


def test_k_samples_give_a_reproducible_mean_and_positive_spread():
    t1, mask = _volume_and_mask()
    first = _synthesize(_noisy_denoiser, t1, mask, k=3, name="pc")
    again = _synthesize(_noisy_denoiser, t1, mask, k=3, name="pc")
    assert len(first.samples) == 3
    np.testing.assert_array_equal(first.std, again.std)
    assert (first.std[mask] > 0).all() and (first.std[~mask] == 0).all()
    np.testing.assert_allclose(first.mean, np.mean(first.samples, axis=0), atol=1e-6)


def test_each_image_has_its_own_noise():
    """Two participants must not share a noise pattern: it would survive any group average of their PET."""
    t1, mask = _volume_and_mask()
    first = _synthesize(_noisy_denoiser, t1, mask, name="pc", image="sub-01")
    same = _synthesize(_noisy_denoiser, t1, mask, name="pc", image="sub-01")
    other = _synthesize(_noisy_denoiser, t1, mask, name="pc", image="sub-02")
    np.testing.assert_array_equal(first.mean, same.mean)
    differs = first.mean[mask] != other.mean[mask]
    assert differs.mean() > 0.99


def test_view_std_is_the_spread_of_the_planes_k_sample_means():
    t1, mask = _volume_and_mask()
    one_plane = _synthesize(_noisy_denoiser, t1, mask, k=2, name="pc")
    assert one_plane.view_std is None
    result = _synthesize(_noisy_denoiser, t1, mask, k=2, name="pc", planes=("axial", "coronal", "sagittal"))
    means = np.stack([result.per_plane[p] for p in ("axial", "coronal", "sagittal")])
    np.testing.assert_allclose(means.mean(axis=0), result.mean, atol=1e-6)
    np.testing.assert_allclose(result.view_std, means.std(axis=0, ddof=1), atol=1e-6)
    assert (result.view_std[mask] > 0).all() and (result.view_std[~mask] == 0).all()


def test_precision_defaults_to_fp32_on_cpu_and_rejects_unknown_names():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))


def _tiny_denoiser() -> torch.nn.Module:
    tiny = NetworkConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), num_groups=4)
    net = ScoreUNet(tiny, SLICE)
    torch.nn.init.normal_(net.output_conv.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    return build_denoiser(net, SDEConfig()).eval()


def test_inference_wrapper_is_exact_in_fp32_and_close_in_bf16():
    denoiser = _tiny_denoiser()
    x, cond = torch.randn(2, 1, SLICE, SLICE), torch.rand(2, 1, SLICE, SLICE)
    sigma = torch.tensor([0.5, 3.0])
    with torch.inference_mode():
        reference = denoiser(x, sigma, cond)
    fp32 = InferenceDenoiser(denoiser, "cpu", "auto")
    assert fp32.precision == "fp32"
    torch.testing.assert_close(fp32(x, sigma, cond), reference, rtol=0, atol=0)
    bf16 = InferenceDenoiser(denoiser, "cpu", "bf16")
    out = bf16(x, sigma, cond)
    assert out.dtype == torch.float32
    assert not torch.equal(out, reference)  # it really ran in reduced precision
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.05)


def test_batch_is_sized_from_free_memory():
    assert batch_for_memory(10 * 1024**3, 100 * 1024**2) == 71  # 70% of 10 GiB at 100 MiB per slice
    assert batch_for_memory(1024, 100 * 1024**2) == 1
    assert batch_for_memory(1e15, 1.0) == volume.MAX_BATCH


def test_cuda_batch_uses_the_free_memory_the_driver_reports(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 1024**3, 80 * 1024**3))
    batch = default_batch_size(torch.device("cuda"), 128)
    assert batch == batch_for_memory(8 * 1024**3, volume.PAPER_UNET_BYTES_PER_SLICE)
    assert default_batch_size(torch.device("cpu"), 128) == 16
