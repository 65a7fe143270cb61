"""Registration with ANTs: subject brain to template brain (affine then SyN), and PET to T1w (rigid, mutual
information). Transforms are ANTs files kept in the work directory; they map fixed-space points to moving space,
so images are resampled onto a fixed grid with the forward list and back with the inverse list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ants
import numpy as np

from bids_jdam.io import atomic

ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
# File names of the saved transforms (suffixes tell ANTs the format).
AFFINE = "affine.mat"
WARP = "warp.nii.gz"
INVERSE_WARP = "inverse_warp.nii.gz"
# SyN optimizes at 4, 2 and 1 times the grid spacing, but not on levels finer than SYN_FINEST_MM: on the phantom,
# optimizing the 4 mm level cut the mean error from 3.2 to 2.1 mm (4 mm grid), while adding a 2 mm level cut it
# only from 3.0 to 2.6 mm for 33 more CPU seconds (2 mm grid).
SYN_ITERATIONS = (40, 20, 10)
SYN_FINEST_MM = 4.0


def syn_iterations(spacing_mm: float) -> tuple[int, ...]:
    """SyN iterations per level for a model grid of ``spacing_mm``."""
    levels_mm = (4 * spacing_mm, 2 * spacing_mm, spacing_mm)
    return tuple(n if level >= SYN_FINEST_MM else 0 for n, level in zip(SYN_ITERATIONS, levels_mm))


@dataclass(frozen=True)
class Transforms:
    """A subject-to-template mapping: ``forward`` resamples subject images onto the template grid, ``inverse``
    (with ``inverse_invert`` flags) resamples template images onto the subject's grid."""

    affine: Path
    warp: Path
    inverse_warp: Path

    @property
    def forward(self) -> list[str]:
        return [str(self.warp), str(self.affine)]

    @property
    def inverse(self) -> list[str]:
        return [str(self.affine), str(self.inverse_warp)]

    @property
    def inverse_invert(self) -> list[bool]:
        return [True, False]


def seed_ants(seed: int) -> None:
    """Fix the seed of ANTs' random metric sampling (antspyx reads it from its config, not from arguments)."""
    ants.config.set_ants_deterministic(on=False, seed_value=seed)


def in_one_thread(name: str, *args: str | int) -> Any:
    """Call this module's function ``name`` in a fresh Python process whose ITK uses one thread; return its result.

    ITK sums the registration metric over threads in an order that varies from run to run, so two runs of SyN with
    two threads and the same seed differ (measured on a phantom: template correlation 0.778 vs 0.771), while
    one-thread runs are bit-identical. ITK reads its thread count once per process, hence the fresh process
    (a plain subprocess, so no caller's ``__main__`` is re-imported). Arguments and result travel as JSON.
    """
    code = (
        "import json, sys; from bids_jdam.preprocess import registration; "
        "print(json.dumps(getattr(registration, sys.argv[1])(*json.loads(sys.argv[2]))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, name, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, ITK_THREADS_ENV: "1"},
        check=False,
    )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the registration process ended with code {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def register_brain_to_template(
    moving_brain: Path, fixed_brain: Path, affine_out: Path, warp_out: Path, inverse_warp_out: Path, *, seed: int
) -> dict[str, Any]:
    """Affine then SyN registration of a skull-stripped subject to the template brain; write the three transforms.

    The moving image is first resampled to the template's voxel size, so the cost is set by the model grid. It runs
    in one ITK thread (:func:`in_one_thread`), so a rerun after a kill gives the uninterrupted run's transforms.
    """
    paths = (moving_brain, fixed_brain, affine_out, warp_out, inverse_warp_out)
    return in_one_thread("register_brain_here", *(str(p) for p in paths), seed)


def register_brain_here(
    moving_brain: str, fixed_brain: str, affine_out: str, warp_out: str, inverse_warp_out: str, seed: int
) -> dict[str, Any]:
    """:func:`register_brain_to_template` in this process, at this process's ITK thread count."""
    affine_out = Path(affine_out)
    seed_ants(seed)
    fixed = ants.image_read(str(fixed_brain))
    iterations = syn_iterations(min(fixed.spacing))
    moving = ants.image_read(str(moving_brain))
    if max(moving.spacing) < min(fixed.spacing):
        moving = ants.resample_image(moving, fixed.spacing, use_voxels=False, interp_type=0)
    with tempfile.TemporaryDirectory(dir=affine_out.parent, prefix=atomic.TEMPORARY_PREFIX) as tmp:
        reg = ants.registration(
            fixed, moving, type_of_transform="SyN", reg_iterations=iterations, outprefix=str(Path(tmp) / "reg_")
        )
        warp = _written_transform(reg["fwdtransforms"], "Warp.nii.gz", tmp)
        affine = _written_transform(reg["fwdtransforms"], ".mat", tmp)
        inverse_warp = _written_transform(reg["invtransforms"], "InverseWarp.nii.gz", tmp)
        atomic.move(affine, affine_out)
        atomic.move(warp, warp_out)
        atomic.move(inverse_warp, inverse_warp_out)
    warped = reg["warpedmovout"].numpy()
    template = fixed.numpy()
    inside = template > 0
    return {
        "correlation_with_template": float(np.corrcoef(warped[inside], template[inside])[0, 1]),
        "syn_iterations": list(iterations),
    }


def _written_transform(paths: list[str], ending: str, scratch: str) -> str:
    """The transform ANTs reports with ``ending``; ANTs can fail to write one (full disk) without raising."""
    for path in paths:
        if path.endswith(ending) and Path(path).is_file():
            return path
    raise RuntimeError(f"ANTs wrote no *{ending} transform in {scratch} (is the disk full?)")


# A rigid fit of a 2-4 mm PET needs neither ANTs' default 2100/1200/1200/10 iterations nor a sub-millimetre
# fixed image: three levels, a tenth of the voxels sampled, the T1w at the PET's voxel size.
RIGID_ITERATIONS = (100, 50, 25)
RIGID_SHRINK_FACTORS = (4, 2, 1)
RIGID_SMOOTHING_MM = (4.0, 2.0, 0.0)
RIGID_SAMPLING_RATE = 0.1


def register_rigid(moving: Path, fixed: Path, transform_out: Path, *, seed: int) -> dict[str, list[float]]:
    """Rigid registration (Mattes mutual information) of ``moving`` to ``fixed``; write the ANTs transform (in one
    ITK thread, as :func:`register_brain_to_template`). The fixed image is fitted at no finer than the moving
    image's voxel size, so a 0.7 mm T1w costs what a 2 mm PET can use."""
    return in_one_thread("register_rigid_here", str(moving), str(fixed), str(transform_out), seed)


def register_rigid_here(moving: str, fixed: str, transform_out: str, seed: int) -> dict[str, list[float]]:
    """:func:`register_rigid` in this process, at this process's ITK thread count."""
    transform_out = Path(transform_out)
    seed_ants(seed)
    fixed_img = ants.image_read(str(fixed))
    moving_img = ants.image_read(str(moving))
    coarsest = min(moving_img.spacing)
    if min(fixed_img.spacing) < coarsest:
        fixed_img = ants.resample_image(fixed_img, (coarsest,) * 3, use_voxels=False, interp_type=0)
    with tempfile.TemporaryDirectory(dir=transform_out.parent, prefix=atomic.TEMPORARY_PREFIX) as tmp:
        reg = ants.registration(
            fixed_img,
            moving_img,
            type_of_transform="Rigid",
            aff_metric="mattes",
            aff_iterations=RIGID_ITERATIONS,
            aff_shrink_factors=RIGID_SHRINK_FACTORS,
            aff_smoothing_sigmas=RIGID_SMOOTHING_MM,
            smoothing_in_mm=True,
            aff_random_sampling_rate=RIGID_SAMPLING_RATE,
            outprefix=str(Path(tmp) / "rig_"),
        )
        atomic.move(_written_transform(reg["fwdtransforms"][:1], ".mat", tmp), transform_out)
    params = ants.read_transform(str(transform_out)).parameters
    return {"rigid_parameters": [float(p) for p in params]}


def resample(
    moving: Path,
    reference: Path,
    transforms: list[str],
    out_path: Path,
    *,
    invert: list[bool] | None = None,
    interpolator: str = "linear",
) -> None:
    """Resample ``moving`` onto the grid of ``reference`` through ``transforms`` (applied last to first)."""
    out = ants.apply_transforms(
        fixed=ants.image_read(str(reference)),
        moving=ants.image_read(str(moving)),
        transformlist=transforms,
        whichtoinvert=invert,
        interpolator=interpolator,
    )
    ants.image_write(out, str(out_path))
