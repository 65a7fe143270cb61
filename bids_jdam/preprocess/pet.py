"""PET frames: a static image is used as is; a dynamic one becomes the mean of its late frames."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.errors import InputError
from bids_jdam.preprocess.io import sidecar_path

# FDG uptake is read from the frames that start at or after 30 min post injection (ADNI acquires 30-60 min).
LATE_FRAME_START_S = 1800.0


def static_pet(img: nib.Nifti1Image, pet_path: Path) -> tuple[nib.Nifti1Image, list[int]]:
    """Return a 3D PET image and the frame indices averaged into it.

    With several frames the BIDS sidecar's ``FrameTimesStart`` selects the late frames; without timing the
    image is ambiguous and rejected.
    """
    if img.ndim == 3:
        return img, [0]
    data = np.asarray(img.dataobj, dtype=np.float32)
    starts = _frame_starts(pet_path, data.shape[3])
    late = [i for i, start in enumerate(starts) if start >= LATE_FRAME_START_S]
    if not late:
        raise InputError(f"{pet_path}: no frame starts at or after {LATE_FRAME_START_S:.0f} s post injection")
    mean = data[..., late].mean(axis=3)
    return nib.Nifti1Image(mean.astype(np.float32), img.affine), late


def _frame_starts(pet_path: Path, nframes: int) -> list[float]:
    sidecar = sidecar_path(pet_path)
    if not sidecar.exists():
        raise InputError(f"{pet_path}: a 4D PET with {nframes} frames needs FrameTimesStart in {sidecar.name}")
    try:
        starts = json.loads(sidecar.read_text()).get("FrameTimesStart")
    except json.JSONDecodeError as exc:
        raise InputError(f"{sidecar}: not valid JSON ({exc})") from None
    if not isinstance(starts, list) or len(starts) != nframes:
        raise InputError(f"{sidecar}: FrameTimesStart must list {nframes} frame start times")
    return [float(s) for s in starts]
