"""Whole-brain synthesis: every slice of each plane through the sampler, back to the template-space volume.

Slices are sampled in batches; each slice's noise comes from its own generator keyed by (seed, image, plane,
slice, sample), so the volume does not depend on the batch size and two images never share noise. Several planes
are fused by their mean, which removes the stripes that slice-wise sampling leaves between neighbouring slices;
K samples give a mean and a per-voxel standard deviation (the sampling spread). With several planes, the standard
deviation across the planes' reconstructions (each the mean of its K samples) says where the three 2D views of the
same brain disagree: the map that, on held-out phantoms, points to where the error is large
(benchmarks/synthesis.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm

from bids_jdam.config import SamplerConfig
from bids_jdam.data.slices import PLANE_AXES, slices_to_volume, volume_to_slices
from bids_jdam.diffusion.noise import SliceKey
from bids_jdam.diffusion.samplers import network_evaluations, sample
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.runtime.denormals import subnormals_flushed, without_subnormals
from bids_jdam.synthesis.provenance import SynthesisProvenance
from bids_jdam.synthesis.sampling_plan import SamplingPlan

log = logging.getLogger("bids_jdam.synthesis")

DenoiserFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# PET slices [n, 1, H, W] for MRI slices [n, 1, H, W] (model units), one noise key per slice.
SlicePredictor = Callable[[torch.Tensor, list[SliceKey]], torch.Tensor]

# Peak activation memory of one 128x128 slice through the paper-size U-Net in inference mode: an upper bound
# used only when no probe is possible.
PAPER_UNET_BYTES_PER_SLICE = 40 * 1024**2
MAX_BATCH = 1024


@dataclass
class SynthesisResult:
    """Template-space synthetic PET (model units: SUVR) and how it was made."""

    mean: np.ndarray
    std: np.ndarray | None  # across the K fused samples; None when K = 1
    view_std: np.ndarray | None  # across the planes' K-sample means; None with one plane
    samples: list[np.ndarray]
    per_plane: dict[str, np.ndarray]  # each plane's mean of its K samples
    network_evaluations: int
    seconds: float
    batch_size: int
    subnormals_flushed: bool = False  # CPU arithmetic flushed subnormal floats to zero (bids_jdam.runtime.denormals)
    provenance: SynthesisProvenance | None = None
    # The predictive SD of the mean from the model's single-sample error model (bids_jdam.synthesis.error_model),
    # where the run is the one-sample synthesis it was fitted for; None otherwise.
    predictive_sd: np.ndarray | None = None  # set by the Synthesizer, which knows the model
    plan: SamplingPlan | None = None  # how the Synthesizer sampled and which calibrations hold

    def maps(self) -> dict[str, np.ndarray]:
        """The template-space maps this run made, by field name: the mean and whichever SD maps exist."""
        fields = ("mean", "std", "view_std", "predictive_sd")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


@without_subnormals
def synthesize_volume(
    denoiser_fn: DenoiserFn | None,
    t1_model: np.ndarray,
    brain_mask: np.ndarray,
    sde: VESDE,
    sampler_cfg: SamplerConfig,
    *,
    image: str,
    slice_size: int,
    planes: tuple[str, ...] = ("axial",),
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    conditional: bool = True,
    progress: bool = True,
    predict_slices: SlicePredictor | None = None,
    evaluations_per_slice: int | None = None,
    condition_channels: int = 1,
) -> SynthesisResult:
    """Sample a synthetic PET volume from a model-grid T1w (normalized) inside ``brain_mask``.

    ``image`` names the image (e.g. ``sub-01_ses-1``) in the noise keys, so that each image gets its own noise.
    ``predict_slices`` makes the slices (default: :func:`diffusion_slices` with ``denoiser_fn``, ``sde`` and
    ``sampler_cfg``); ``denoiser_fn`` (None for a model without one) only serves the time estimate and the CUDA
    memory probe, with ``condition_channels`` condition channels, and ``evaluations_per_slice`` (default: the
    sampler's) counts the cost. Runs with subnormal floats flushed to zero on the CPU
    (:mod:`bids_jdam.runtime.denormals`).
    """
    device = torch.device(device)
    predict_slices = predict_slices or partial(
        diffusion_slices, denoiser_fn, sde, sampler_cfg, conditional=conditional, device=device
    )
    start = time.perf_counter()
    k = max(1, sampler_cfg.num_samples)
    jobs = _slice_jobs(brain_mask, planes, k)
    nfe = evaluations_per_slice or network_evaluations(sampler_cfg.name, sampler_cfg.steps, sampler_cfg.corrector_steps)
    channels = condition_channels if conditional else 0
    batch = batch_size or default_batch_size(device, slice_size, denoiser_fn, channels)
    if denoiser_fn is not None:
        _log_estimate(denoiser_fn, jobs, nfe, batch, slice_size, device, channels, sampler_cfg)

    cond_by_plane = {p: volume_to_slices(t1_model.astype(np.float32), p, slice_size) for p in planes}
    out, batch = _sample_jobs(predict_slices, jobs, cond_by_plane, k, batch, sampler_cfg.seed, image, device, progress)
    result = _assemble(out, brain_mask, planes, k, t1_model.shape)
    seconds = time.perf_counter() - start
    log.info("sampled %d slices x %d samples in %.1f s", len(jobs) // k, k, seconds)
    return dataclasses.replace(result, network_evaluations=nfe * len(jobs), seconds=seconds, batch_size=batch)


def _sample_jobs(
    predict_slices: SlicePredictor,
    jobs: list,
    cond_by_plane: dict[str, np.ndarray],
    k: int,
    batch: int,
    seed: int,
    image: str,
    device: torch.device,
    progress: bool,
) -> tuple[dict[tuple[str, int], np.ndarray], int]:
    """Every job's slice in batches (halved on a CUDA out-of-memory error); (slices per (plane, sample), batch)."""
    slice_size = next(iter(cond_by_plane.values())).shape[-1]
    out = {
        (p, s): np.zeros((len(cond), slice_size, slice_size), np.float32)
        for p, cond in cond_by_plane.items()
        for s in range(k)
    }
    bar = tqdm(total=len(jobs), unit="slice", desc="sampling", disable=not progress)
    i = 0
    while i < len(jobs):
        chunk = jobs[i : i + batch]
        try:
            result = _sample_chunk(predict_slices, chunk, cond_by_plane, seed, image, device)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch = max(1, batch // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with batch size %d", batch)
            continue
        for (plane, index, sample_index), sampled in zip(chunk, result):
            out[(plane, sample_index)][index] = sampled
        i += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return out, batch


def _assemble(
    out: dict[tuple[str, int], np.ndarray],
    brain_mask: np.ndarray,
    planes: tuple[str, ...],
    k: int,
    shape: tuple[int, ...],
) -> SynthesisResult:
    """Volumes from the sampled slices: each sample fused over the planes, their mean and SDs (timing left 0)."""
    mask = brain_mask.astype(bool)
    by_plane = {
        plane: np.stack([slices_to_volume(out[(plane, s)], plane, shape) * mask for s in range(k)]) for plane in planes
    }
    samples = [np.mean([by_plane[plane][s] for plane in planes], axis=0).astype(np.float32) for s in range(k)]
    per_plane = {plane: volumes.mean(axis=0).astype(np.float32) for plane, volumes in by_plane.items()}
    return SynthesisResult(
        mean=np.mean(samples, axis=0).astype(np.float32),
        std=np.std(samples, axis=0, ddof=1).astype(np.float32) if k > 1 else None,
        view_std=np.std(list(per_plane.values()), axis=0, ddof=1).astype(np.float32) if len(planes) > 1 else None,
        samples=samples,
        per_plane=per_plane,
        network_evaluations=0,
        seconds=0.0,
        batch_size=0,
        subnormals_flushed=subnormals_flushed(),
    )


def default_batch_size(
    device: torch.device, slice_size: int, denoiser_fn: DenoiserFn | None = None, condition_channels: int = 1
) -> int:
    """CPU: a batch that keeps two cores busy; CUDA: as many slices as 70% of the free memory holds.

    The memory one slice needs is measured with a probe batch through ``denoiser_fn`` (peak allocation over the
    baseline); without a denoiser a conservative estimate for the paper-size U-Net is used. A CUDA out-of-memory
    error during sampling still falls back by halving the batch.
    """
    if device.type != "cuda":
        return 16
    free, _ = torch.cuda.mem_get_info(device)
    per_slice = _probe_bytes_per_slice(denoiser_fn, slice_size, device, condition_channels) if denoiser_fn else None
    return batch_for_memory(free, per_slice or PAPER_UNET_BYTES_PER_SLICE * (slice_size / 128) ** 2)


def batch_for_memory(free_bytes: float, bytes_per_slice: float, fraction: float = 0.7) -> int:
    """The number of slices whose activations fit in ``fraction`` of the free memory, between 1 and MAX_BATCH."""
    return int(max(1, min(MAX_BATCH, fraction * free_bytes // max(bytes_per_slice, 1.0))))


def _probe_bytes_per_slice(
    denoiser_fn: DenoiserFn, slice_size: int, device: torch.device, condition_channels: int, probe: int = 4
) -> float | None:
    """Peak CUDA memory of one network evaluation on ``probe`` slices, per slice."""
    x = torch.zeros(probe, 1, slice_size, slice_size, device=device)
    cond = _zero_condition(x, condition_channels)
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        denoiser_fn(x, torch.ones(probe, device=device), cond)
    torch.cuda.synchronize(device)
    used = torch.cuda.max_memory_allocated(device) - baseline
    return used / probe if used > 0 else None


def _slice_jobs(brain_mask: np.ndarray, planes: tuple[str, ...], k: int) -> list[tuple[str, int, int]]:
    """(plane, slice index, sample index) for every slice that contains brain."""
    jobs = []
    for plane in planes:
        axis = PLANE_AXES[plane]
        other = tuple(a for a in range(3) if a != axis)
        has_brain = np.flatnonzero(brain_mask.any(axis=other))
        jobs += [(plane, int(index), s) for s in range(k) for index in has_brain]
    return jobs


def diffusion_slices(
    denoiser_fn: DenoiserFn,
    sde: VESDE,
    sampler_cfg: SamplerConfig,
    mri: torch.Tensor,
    keys: list[SliceKey],
    *,
    conditional: bool,
    device: torch.device,
) -> torch.Tensor:
    """A diffusion model's PET slices: the reverse SDE sampled for each MRI slice from its own noise key."""
    cond = mri if conditional else None
    return sample(denoiser_fn, cond, tuple(mri.shape), sampler_cfg, sde, keys, device=device)


def _sample_chunk(predict_slices: SlicePredictor, chunk, cond_by_plane, seed, image, device) -> np.ndarray:
    mri = torch.from_numpy(np.stack([cond_by_plane[p][i] for p, i, _ in chunk])[:, None]).to(device)
    keys = [(seed, image, plane, index, s) for plane, index, s in chunk]
    return predict_slices(mri, keys)[:, 0].float().cpu().numpy()


def _zero_condition(x: torch.Tensor, channels: int) -> torch.Tensor | None:
    """A blank condition of ``channels`` channels beside ``x`` (None for an unconditional model)."""
    return x.new_zeros(len(x), channels, *x.shape[2:]) if channels else None


def _log_estimate(denoiser_fn, jobs, nfe, batch, size, device, condition_channels, sampler_cfg) -> None:
    """Time one network evaluation on a full batch and extrapolate to the whole run."""
    if not jobs:
        return
    n = min(batch, len(jobs))
    x = torch.zeros(n, 1, size, size, device=device)
    cond = _zero_condition(x, condition_channels)
    sigma = torch.ones(n, device=device)
    try:
        with torch.inference_mode():
            denoiser_fn(x, sigma, cond)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            denoiser_fn(x, sigma, cond)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        # No estimate then: the sampling loop meets the same error and halves the batch.
        torch.cuda.empty_cache()
        log.info("no time estimate: a batch of %d slices does not fit in GPU memory", n)
        return
    per_eval = time.perf_counter() - t0
    estimate = per_eval * nfe * math.ceil(len(jobs) / n)
    log.info(
        "%d slices x %d network evaluations (%s, %d steps): about %.0f s on %s",
        len(jobs),
        nfe,
        sampler_cfg.name,
        sampler_cfg.steps,
        estimate,
        device,
    )
    if device.type == "cpu" and sampler_cfg.name == "pc" and sampler_cfg.steps >= 1000:
        log.warning(
            "the paper's PC sampler with N=%d on a CPU takes about %.0f minutes; a few-step sampler "
            "(--sampler heun) is much faster",
            sampler_cfg.steps,
            estimate / 60,
        )
