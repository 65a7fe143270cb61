"""Reportlets: the small QC figures of the participant report, drawn with nilearn and matplotlib, saved as PNG.

Every figure is drawn on its own matplotlib Figure (no pyplot: no display, no global state) and written atomically.
PET figures of one image share cut positions and colour limits, so synthetic, real and error mosaics line up
slice for slice.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from nilearn import image, plotting

from bids_jdam.io import atomic

ImageLike = Path | nib.Nifti1Image  # masks may be binary or probabilistic: inside means > 0.5
CUTS_PER_ROW = 7
PET_CMAP = "hot"
DPI = 80
PLANES = {"axial": "z", "coronal": "y", "sagittal": "x"}


def cut_coords(brain_mask: ImageLike, direction: str, n_cuts: int = CUTS_PER_ROW) -> list[float]:
    """World coordinates of ``n_cuts`` evenly spaced slices through the inner 80 % of the brain along ``direction``."""
    mask_img = image.load_img(brain_mask)
    voxels = np.argwhere(np.asarray(mask_img.dataobj) > 0.5)
    if voxels.size == 0:
        raise ValueError("the brain mask is empty; no slices to show")
    world = nib.affines.apply_affine(mask_img.affine, voxels)[:, "xyz".index(direction)]
    low, high = np.percentile(world, [10, 90])
    return [float(c) for c in np.linspace(low, high, n_cuts)]


def pet_colour_limit(pet: ImageLike, brain_mask: ImageLike) -> float:
    """Upper colour limit shared by a synthetic and a real PET: the 99.5th percentile inside the brain."""
    inside = np.asarray(image.load_img(brain_mask).dataobj) > 0.5
    values = np.asarray(image.load_img(pet).dataobj, dtype=np.float64)[inside]
    finite = values[np.isfinite(values)]
    limit = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return limit if limit > 0 and math.isfinite(limit) else 1.0


def brain_mask_reportlet(t1w: ImageLike, brain_mask: ImageLike, out_path: Path) -> Path:
    """The preprocessed T1w with the brain-mask contour in red, in all three planes."""
    figure = _new_figure(rows=3)
    display = plotting.plot_anat(
        t1w,
        display_mode="mosaic",
        cut_coords=_mosaic_cuts(brain_mask),
        figure=figure,
        annotate=True,
        draw_cross=False,
        colorbar=False,
    )
    display.add_contours(brain_mask, levels=[0.5], colors="r", linewidths=1.0)
    return _save(figure, out_path)


def registration_reportlet(t1w: ImageLike, template_t1: ImageLike, brain_mask: ImageLike, out_path: Path) -> Path:
    """Registration check: edges of the subject's T1w (in template space) drawn over the template T1."""
    figure = _new_figure(rows=3)
    display = plotting.plot_anat(
        template_t1,
        display_mode="mosaic",
        cut_coords=_mosaic_cuts(brain_mask),
        figure=figure,
        draw_cross=False,
        colorbar=False,
    )
    display.add_edges(t1w, color="r")
    return _save(figure, out_path)


def pet_mosaic_reportlet(pet: ImageLike, brain_mask: ImageLike, plane: str, vmax: float, out_path: Path) -> Path:
    """One plane (``axial``, ``coronal`` or ``sagittal``) of a PET in SUVR, colour range 0..``vmax``."""
    direction = PLANES[plane]
    figure = _new_figure(rows=1)
    plotting.plot_img(
        pet,
        display_mode=direction,
        cut_coords=cut_coords(brain_mask, direction),
        figure=figure,
        cmap=PET_CMAP,
        vmin=0.0,
        vmax=vmax,
        black_bg=True,
        colorbar=True,
        draw_cross=False,
        cbar_tick_format="%.1f",
    )
    return _save(figure, out_path)


def uncertainty_reportlet(std_map: ImageLike, t1w: ImageLike, brain_mask: ImageLike, out_path: Path) -> Path:
    """Voxel-wise standard deviation across the K samples (SUVR), over the T1w, axial slices."""
    figure = _new_figure(rows=1)
    std_img = image.math_img("np.where(mask > 0.5, std, 0)", std=std_map, mask=brain_mask)
    vmax = pet_colour_limit(std_img, brain_mask)
    plotting.plot_stat_map(
        std_img,
        bg_img=t1w,
        display_mode="z",
        cut_coords=cut_coords(brain_mask, "z"),
        figure=figure,
        cmap="inferno",
        vmin=0.0,
        vmax=vmax,
        symmetric_cbar=False,
        threshold=1e-6,
        draw_cross=False,
        cbar_tick_format="%.2f",
    )
    return _save(figure, out_path)


def error_reportlet(
    synthetic_pet: ImageLike, real_pet: ImageLike, t1w: ImageLike, brain_mask: ImageLike, out_path: Path
) -> Path:
    """Synthetic minus real PET (SUVR) inside the brain, blue where the synthetic is too low, red too high."""
    figure = _new_figure(rows=1)
    error_img = image.math_img(
        "np.where(mask > 0.5, synthetic - real, 0)", synthetic=synthetic_pet, real=real_pet, mask=brain_mask
    )
    errors = np.abs(np.asarray(error_img.dataobj))
    vmax = float(np.percentile(errors[errors > 0], 99)) if np.any(errors > 0) else 1.0
    plotting.plot_stat_map(
        error_img,
        bg_img=t1w,
        display_mode="z",
        cut_coords=cut_coords(brain_mask, "z"),
        figure=figure,
        cmap="RdBu_r",
        vmax=vmax,
        symmetric_cbar=True,
        threshold=1e-6,
        draw_cross=False,
        cbar_tick_format="%.2f",
    )
    return _save(figure, out_path)


def regional_suvr_reportlet(synthetic: dict[str, float], real: dict[str, float] | None, out_path: Path) -> Path:
    """Bar chart of the mean SUVR per coarse region, synthetic beside real when a real PET exists."""
    regions = list(synthetic)
    positions = np.arange(len(regions))
    width = 0.4 if real else 0.7
    figure = Figure(figsize=(8, 3.2))
    axes = figure.add_subplot()
    axes.bar(
        positions - (width / 2 if real else 0),
        [synthetic[r] for r in regions],
        width,
        label="synthetic",
        color="tab:orange",
    )
    if real:
        axes.bar(positions + width / 2, [real.get(r, math.nan) for r in regions], width, label="real", color="tab:blue")
    axes.set_xticks(positions, [r.replace("_", " ") for r in regions], rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("mean SUVR")
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.subplots_adjust(left=0.08, right=0.86, top=0.95, bottom=0.32)
    return _save(figure, out_path)


def _mosaic_cuts(brain_mask: ImageLike) -> dict[str, list[float]]:
    return {direction: cut_coords(brain_mask, direction, 5) for direction in "xyz"}


def _new_figure(rows: int) -> Figure:
    """A pyplot-free figure: no global state, nothing to close, works without a display."""
    return Figure(figsize=(12, 1.9 * rows + 0.3))


def _save(figure: Figure, out_path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor=figure.get_facecolor())
    return atomic.write_bytes(Path(out_path), buffer.getvalue())


def zscore_reportlet(zscore_map: ImageLike, t1w: ImageLike, out_path: Path, limit: float = 4.0) -> Path:
    """The z-score map against the healthy reference on orthogonal slices through its lowest z (blue: below the
    healthy controls), over the T1w; |z| < 1 is left clear."""
    figure = Figure(figsize=(10, 3.4))
    z_img = image.load_img(zscore_map)
    data = np.asarray(z_img.dataobj)
    lowest = np.unravel_index(int(np.argmin(data)), data.shape)
    centre = nib.affines.apply_affine(z_img.affine, lowest)
    plotting.plot_stat_map(
        z_img,
        bg_img=t1w,
        display_mode="ortho",
        cut_coords=tuple(float(c) for c in centre),
        figure=figure,
        cmap="RdBu_r",
        vmax=limit,
        symmetric_cbar=True,
        threshold=1.0,
        draw_cross=False,
        cbar_tick_format="%.0f",
    )
    return _save(figure, out_path)


def regional_reference_reportlet(rows: list[RegionBand], level_z: float, out_path: Path) -> Path:
    """Per region: the healthy band (mean +- ``level_z`` SD, grey), the synthetic SUVR with its interval (orange)
    and the real SUVR where known (blue)."""
    figure = Figure(figsize=(8, 0.26 * len(rows) + 1.0))
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    for y, row in zip(positions, rows):
        axes.barh(y, 2 * level_z * row.healthy_sd, left=row.healthy_mean - level_z * row.healthy_sd, height=0.6,
                  color="0.85", label="healthy band" if y == positions[0] else None)  # fmt: skip
        error = None if row.lower is None else [[row.synthetic - row.lower], [row.upper - row.synthetic]]
        axes.errorbar(row.synthetic, y, xerr=error, fmt="o", color="tab:orange", markersize=4, capsize=2,
                      label="synthetic" if y == positions[0] else None)  # fmt: skip
        if row.real is not None:
            axes.plot(row.real, y, "D", color="tab:blue", markersize=4, label="real" if y == positions[0] else None)
    axes.set_yticks(positions, [row.name for row in rows], fontsize=7)
    axes.set_xlabel("regional SUVR")
    axes.legend(fontsize=7, loc="lower right")
    figure.subplots_adjust(left=0.25, right=0.97, top=0.98, bottom=0.6 / (0.26 * len(rows) + 1.0) + 0.02)
    return _save(figure, out_path)


@dataclass(frozen=True)
class RegionBand:
    """One region of :func:`regional_reference_reportlet` (bounds None where no interval applies)."""

    name: str
    synthetic: float
    lower: float | None
    upper: float | None
    healthy_mean: float
    healthy_sd: float
    real: float | None
