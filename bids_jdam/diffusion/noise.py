"""Reproducible per-slice noise: each slice draws from its own generator, so results never depend on batch size.

A slice is identified by the key (seed, image, plane, slice index, sample index); the same key yields the same
stream of Gaussian draws whether the slice is sampled alone or with others. The image name (e.g. ``sub-01_ses-1``)
is part of the key so that two images never share noise: with the same noise at every slice position, every
participant's synthetic PET would carry the same sampling-noise pattern, which no group average removes.

The generators live on the sampling device, so a GPU sampler draws its noise there and never copies it from the
host inside the loop; a CPU generator and a CUDA generator seeded alike give different streams, so CPU and GPU
runs of the same seed differ in their noise.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

SliceKey = tuple[int, str, str, int, int]  # (seed, image, plane, slice index, sample index)


def generator_seed(key: SliceKey) -> int:
    """A 63-bit seed that is a stable function of the key (Python's hash() is salted per process)."""
    digest = hashlib.sha256(repr(tuple(key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SliceNoise:
    """One torch.Generator per slice on ``device``; ``randn()`` stacks one draw per slice, made on that device.

    ``scale`` multiplies every draw (a sampler's temperature); the streams themselves do not depend on it.
    """

    def __init__(
        self,
        keys: list[SliceKey],
        shape_per_item: tuple[int, ...],
        device: torch.device | str = "cpu",
        scale: float = 1.0,
    ):
        if not keys:
            raise ValueError("SliceNoise needs at least one slice key")
        if not scale > 0:
            raise ValueError(f"SliceNoise scale must be positive, got {scale}")
        self.scale = float(scale)
        self.shape_per_item = tuple(shape_per_item)
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(generator_seed(key)) for key in keys]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self) -> Tensor:
        """[B, *shape_per_item] normal with SD ``scale``; row b is the next draw of slice b's own stream."""
        draws = torch.stack(
            [torch.randn(self.shape_per_item, generator=g, device=self.device) for g in self.generators]
        )
        return draws if self.scale == 1.0 else draws * self.scale
