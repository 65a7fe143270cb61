"""One thread setting for every library that preprocessing uses (ITK/ANTs, OpenMP, torch)."""

from __future__ import annotations

import os


def configure_threads(nthreads: int) -> None:
    """Limit ANTs/ITK, OpenMP and torch to ``nthreads`` so a run uses the cores it was given and no more."""
    if nthreads < 1:
        raise ValueError(f"nthreads must be >= 1, got {nthreads}")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(nthreads)
    os.environ["OMP_NUM_THREADS"] = str(nthreads)
    import torch

    torch.set_num_threads(nthreads)
