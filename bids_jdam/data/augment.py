"""T1w augmentation for training: what differs between scanners, field strengths and preprocessing runs.

After N4 and percentile scaling (:mod:`bids_jdam.preprocess.intensity`) the T1w lies on 0..1, but its grey/white
contrast still depends on the field strength and sequence (3T, 5T, 7T), and N4 leaves a slow residual bias. Each
training slice gets a random intensity curve ``t ** gamma`` (which keeps 0 and 1 in place and moves the mid-tones)
and a random linear bias field across the slice. The parameters come from the batch generator, drawn for the global
batch, so every rank and every resumed run sees the same augmentation.
"""

from __future__ import annotations

import torch


def draw_mri_augmentation(
    batch: int, generator: torch.Generator, log_gamma_range: float, bias_amplitude: float
) -> torch.Tensor:
    """``[batch, 3]``: log gamma uniform in +-``log_gamma_range``, then two bias slopes in +-``bias_amplitude``."""
    uniform = torch.rand((batch, 3), generator=generator) * 2 - 1
    return uniform * torch.tensor([log_gamma_range, bias_amplitude, bias_amplitude])


def augment_mri(mri: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply :func:`draw_mri_augmentation`'s parameters to ``[batch, 1, H, W]`` T1w slices on 0..1."""
    batch, _, height, width = mri.shape
    params = params.to(mri.device, mri.dtype)
    rows = torch.linspace(-1, 1, height, device=mri.device, dtype=mri.dtype)[:, None]
    cols = torch.linspace(-1, 1, width, device=mri.device, dtype=mri.dtype)[None, :]
    gamma = params[:, 0].exp().view(batch, 1, 1, 1)
    bias = 1 + params[:, 1].view(batch, 1, 1, 1) * rows + params[:, 2].view(batch, 1, 1, 1) * cols
    return (mri.clamp(min=0) ** gamma * bias).clamp(0, 1)
