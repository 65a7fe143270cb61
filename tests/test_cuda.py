"""The CUDA sampling path on a real GPU: noise made on the device, memory-sized batches, bf16, torch.compile.

Skipped where no CUDA GPU is visible (CI has none); ``benchmarks/gpu_check.sh`` runs this file on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_jdam.config import NetworkConfig, SamplerConfig, SDEConfig
from bids_jdam.diffusion.noise import SliceNoise
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.models.unet import ScoreUNet
from bids_jdam.synthesis.inference import InferenceDenoiser
from bids_jdam.synthesis.volume import default_batch_size, synthesize_volume

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU is visible")

CUDA = torch.device("cuda")
SLICE = 32


def _denoiser() -> torch.nn.Module:
    cfg = NetworkConfig(
        channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0, num_groups=4
    )
    torch.manual_seed(0)
    net = ScoreUNet(cfg, SLICE)
    torch.nn.init.normal_(net.output_conv.weight, std=0.1)
    return build_denoiser(net, SDEConfig()).eval().to(CUDA)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0.1, 1.0, (24, 28, 20)).astype(np.float32)
    mask = np.zeros(t1.shape, bool)
    mask[4:20, 5:24, 3:17] = True
    return t1, mask


def _synthesize(model, batch_size=None, planes=("axial",)):
    t1, mask = _volume()
    sampler = SamplerConfig(name="ancestral", steps=6, seed=1)
    return synthesize_volume(
        model,
        t1,
        mask,
        VESDE(0.01, 20.0),
        sampler,
        image="sub-01",
        slice_size=SLICE,
        planes=planes,
        device=CUDA,
        batch_size=batch_size,
        progress=False,
    )


def test_slice_noise_is_drawn_on_the_gpu_and_does_not_depend_on_the_batch():
    keys = [(0, "sub-01", "axial", i, 0) for i in (3, 7)]
    together = SliceNoise(keys, (1, 8, 8), CUDA)
    alone = SliceNoise(keys[1:], (1, 8, 8), CUDA)
    assert all(g.device.type == "cuda" for g in together.generators)
    for _ in range(3):
        draws = together.randn()
        assert draws.device.type == "cuda"
        torch.testing.assert_close(draws[1], alone.randn()[0], rtol=0, atol=0)


def test_volume_on_the_gpu_matches_the_cpu_network_and_does_not_depend_on_the_batch():
    denoiser = _denoiser()
    fp32 = InferenceDenoiser(denoiser, CUDA, "fp32")
    small, large = _synthesize(fp32, batch_size=3), _synthesize(fp32, batch_size=40)
    # cuDNN picks its algorithms (and TF32 for convolutions) per shape: close, not bit-identical; a slice that
    # drew another slice's noise would differ by O(1).
    np.testing.assert_allclose(small.mean, large.mean, atol=1e-2)
    assert np.isfinite(small.mean).all() and np.abs(small.mean).max() > 0
    x, cond = torch.randn(4, 1, SLICE, SLICE), torch.rand(4, 1, SLICE, SLICE)
    sigma = torch.tensor([0.02, 0.5, 3.0, 20.0])
    on_cpu = InferenceDenoiser(_denoiser().cpu(), "cpu", "fp32")(x, sigma, cond)
    on_gpu = fp32(x.to(CUDA), sigma.to(CUDA), cond.to(CUDA)).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-2, atol=1e-2)


def test_bf16_autocast_and_channels_last_stay_close_to_fp32():
    denoiser = _denoiser()
    auto = InferenceDenoiser(denoiser, CUDA, "auto")
    assert auto.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    x, cond = torch.randn(4, 1, SLICE, SLICE, device=CUDA), torch.rand(4, 1, SLICE, SLICE, device=CUDA)
    sigma = torch.tensor([0.02, 0.5, 3.0, 20.0], device=CUDA)
    reduced = auto(x, sigma, cond)
    reference = InferenceDenoiser(denoiser, CUDA, "fp32")(x, sigma, cond)
    assert reduced.dtype == torch.float32 and not torch.equal(reduced, reference)
    torch.testing.assert_close(reduced, reference, rtol=0.05, atol=0.05)


def test_batch_is_sized_from_the_measured_free_memory():
    model = InferenceDenoiser(_denoiser(), CUDA, "auto")
    batch = default_batch_size(CUDA, SLICE, model)
    assert 16 <= batch  # a 32x32 slice of a tiny network needs far less than 1/16 of any GPU's memory
    result = _synthesize(model)
    assert result.batch_size == batch and np.isfinite(result.mean).all()


def test_compiled_network_gives_the_eager_result():
    denoiser = _denoiser()
    eager = _synthesize(InferenceDenoiser(denoiser, CUDA, "fp32"), batch_size=8)
    compiled = _synthesize(InferenceDenoiser(denoiser, CUDA, "fp32", compile_network=True), batch_size=8)
    np.testing.assert_allclose(compiled.mean, eager.mean, atol=1e-2)


def test_training_runs_channels_last_in_bf16_and_checkpoints(tmp_path):
    from bids_jdam.config import small_config
    from bids_jdam.data.dataset import PairedSliceDataset
    from bids_jdam.io.checkpoints import load_checkpoint, save_checkpoint
    from bids_jdam.methods import METHODS
    from bids_jdam.training.distributed import Ranks
    from tests.test_train import synthetic_subjects

    cfg = small_config()
    cfg.network = NetworkConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0, num_groups=4
    )
    cfg.grid.slice_size, cfg.train.batch_size = 16, 4
    method = METHODS.named("jdam-residual")
    cfg = method.configure(cfg)
    dataset = PairedSliceDataset(synthetic_subjects(None, cfg, ["01"]), ("axial",), 16)
    trainer = method.trainer(cfg, dataset, CUDA, 0, Ranks())
    conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    losses = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(losses))
    save_checkpoint(tmp_path, trainer.step, *trainer.checkpoint())
    tensors, state = load_checkpoint(tmp_path)
    assert state["step"] == 3 and all(t.is_contiguous() for t in tensors.values())
