"""A model's healthy-control reference: voxelwise and regional FDG SUVR mean and SD of its CN training subjects.

What z-score maps and the AD-pattern score are read against (as NEUROSTAT/3D-SSP and SPM single-subject analyses
compare one scan with a healthy group: z = (SUVR - mean) / SD). It lives in the model directory beside the weights:
``healthy_reference.nii.gz`` (mean and SD on the model grid, two volumes) and ``healthy_reference.tsv`` (AAL3 regions
and the AD meta-ROI), and the model card records the subjects and both files' sha256, so a changed file is refused.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_jdam.errors import InputError
from bids_jdam.io import atomic

IMAGE_FILE = "healthy_reference.nii.gz"
TABLE_FILE = "healthy_reference.tsv"
TABLE_COLUMNS = ("index", "label_name", "mean_suvr", "sd_suvr")


@dataclass(frozen=True)
class RegionNorm:
    """One region's healthy SUVR: mean and SD over the reference subjects of their regional means."""

    index: int
    name: str
    mean: float
    sd: float

    def zscore(self, suvr: float) -> float:
        return (suvr - self.mean) / self.sd


@dataclass(frozen=True)
class HealthyReference:
    """Voxelwise ``mean`` and ``sd`` (0 outside the voxels most reference subjects share) and regional norms."""

    mean: np.ndarray
    sd: np.ndarray
    affine: np.ndarray
    regions: tuple[RegionNorm, ...]
    subjects: tuple[str, ...]

    def region(self, index: int) -> RegionNorm | None:
        """The norm of the region with atlas ``index`` (or the meta-ROI's), None where the reference has none."""
        return next((norm for norm in self.regions if norm.index == index), None)

    def zscore_map(self, suvr: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
        """z of ``suvr`` against the reference inside ``brain_mask`` where the reference has an SD; 0 elsewhere."""
        inside = brain_mask & (self.sd > 0)
        z = np.zeros(suvr.shape, np.float32)
        z[inside] = (suvr[inside] - self.mean[inside]) / self.sd[inside]
        return z

    def save(self, model_dir: Path) -> dict[str, Any]:
        """Write both files into ``model_dir``; returns the model card's record of them."""
        image = nib.Nifti1Image(np.stack([self.mean, self.sd], axis=-1).astype(np.float32), self.affine)
        image.header.set_xyzt_units("mm")
        atomic.save_nifti(image, model_dir / IMAGE_FILE)
        rows = ["\t".join(TABLE_COLUMNS)] + [
            f"{norm.index}\t{norm.name}\t{norm.mean:.6f}\t{norm.sd:.6f}" for norm in self.regions
        ]
        atomic.write_text(model_dir / TABLE_FILE, "\n".join(rows) + "\n")
        return {
            "diagnosis": "CN",
            "subjects": list(self.subjects),
            "description": "voxelwise and regional SUVR mean and SD of the model's CN training subjects' PET, "
            "as the app preprocesses it (bids_jdam.evaluate.healthy_reference)",
            "sha256": {name: atomic.sha256_file(model_dir / name) for name in (IMAGE_FILE, TABLE_FILE)},
        }

    @classmethod
    def load(cls, model_dir: Path, record: Mapping[str, Any]) -> HealthyReference:
        """The reference the card's ``record`` names, its files checked against their recorded sha256."""
        checksums = record.get("sha256")
        subjects = record.get("subjects")
        if not isinstance(checksums, Mapping) or not isinstance(subjects, list):
            raise InputError(f"{model_dir}: the model card's healthy_reference needs its sha256 and subjects")
        for name in (IMAGE_FILE, TABLE_FILE):
            path = model_dir / name
            if not path.is_file():
                raise InputError(f"{path}: missing; the model card records a healthy-control reference")
            if atomic.sha256_file(path) != checksums.get(name):
                raise InputError(f"{path}: sha256 does not match the model card; the file is corrupt or was replaced")
        image = nib.load(str(model_dir / IMAGE_FILE))
        data = np.asarray(image.get_fdata(dtype=np.float32))
        if data.ndim != 4 or data.shape[-1] != 2:
            raise InputError(f"{model_dir / IMAGE_FILE}: expected two volumes (mean, SD), got shape {data.shape}")
        return cls(
            mean=data[..., 0],
            sd=data[..., 1],
            affine=image.affine,
            regions=_read_regions(model_dir / TABLE_FILE),
            subjects=tuple(str(s) for s in subjects),
        )


def _read_regions(path: Path) -> tuple[RegionNorm, ...]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != TABLE_COLUMNS:
            raise InputError(f"{path}: expected the columns {', '.join(TABLE_COLUMNS)}")
        try:
            return tuple(
                RegionNorm(int(row["index"]), row["label_name"], float(row["mean_suvr"]), float(row["sd_suvr"]))
                for row in reader
            )
        except ValueError as error:
            raise InputError(f"{path}: not a table of numbers ({error})") from None
