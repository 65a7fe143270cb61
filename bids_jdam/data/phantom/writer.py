"""BIDS names, sidecars and dataset-level files of the phantom (raw dataset and ``derivatives/phantom``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam import __version__
from bids_jdam.config import TEMPLATE_NAME
from bids_jdam.data.phantom.model import MRIProtocol, PETDraw
from bids_jdam.io import atomic

GENERATOR_NAME = "bids-jdam-phantom"
BIDS_VERSION = "1.10.0"
TRUTH_DIR = Path("derivatives") / "phantom"


@dataclass(frozen=True)
class Layout:
    """How subjects, sessions and the tracer are named: plain BIDS or Clinica's ``adni-to-bids`` output."""

    name: str  # "bids" or "clinica"

    def subject(self, index: int, n_subjects: int) -> str:
        if self.name == "clinica":
            return f"ADNI002S{index + 1:04d}"
        return f"{index + 1:0{max(2, len(str(n_subjects)))}d}"

    def sessions(self, n_sessions: int) -> list[str | None]:
        if self.name == "clinica":
            return [f"M{12 * k:03d}" for k in range(n_sessions)]
        return [None] if n_sessions == 1 else [f"{k + 1:02d}" for k in range(n_sessions)]

    @property
    def tracer_entities(self) -> str:
        return "trc-18FFDG_rec-uniform" if self.name == "clinica" else "trc-FDG"


def subject_prefix(subject: str, session: str | None) -> tuple[Path, str]:
    """Folder (relative) and file-name prefix of one subject/session."""
    folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "")
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    return folder, prefix


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, code: int = 1, dtype=None) -> None:
    """Write a NIfTI with qform/sform set (scanner or MNI code) and millimetre units.

    The array is handed over in Fortran order, NIfTI's own, so that nibabel writes it without strided copies.
    """
    image = nib.Nifti1Image(np.asfortranarray(data, dtype=dtype or data.dtype), affine)
    image.header.set_qform(affine, code=code)
    image.header.set_sform(affine, code=code)
    image.header.set_xyzt_units("mm", "sec")
    atomic.make_dirs(path.parent)
    nib.save(image, str(path))


def save_json(path: Path, content: dict) -> None:
    atomic.make_dirs(path.parent)
    path.write_text(json.dumps(content, indent=2) + "\n")


def t1w_sidecar(protocol: MRIProtocol) -> dict:
    """T1w sidecar: the scanner and sequence that the phantom imitates."""
    mp2rage = protocol.sequence == "MP2RAGE"
    return {
        "Manufacturer": "bids-jdam phantom",
        "ManufacturersModelName": f"phantom {protocol.field_strength}T",
        "MagneticFieldStrength": protocol.field_strength,
        "PulseSequenceType": protocol.sequence,
        "SeriesDescription": "MP2RAGE UNIT1 (phantom)" if mp2rage else "MPRAGE (phantom)",
        "RepetitionTime": 5.0 if mp2rage else 2.3,
        "EchoTime": 0.0023 if mp2rage else 0.00298,
        "InversionTime": 0.9,
        "FlipAngle": 5 if mp2rage else 9,
        "SliceThickness": protocol.voxel_mm,
        "ImageComments": "Synthetic image from bids-jdam-phantom; not a real acquisition.",
    }


def pet_sidecar(draw: PETDraw) -> dict:
    """BIDS-PET sidecar of a static 30-minute FDG frame starting 30 minutes after injection."""
    return {
        "Manufacturer": "bids-jdam phantom",
        "ManufacturersModelName": "phantom PET",
        "Units": "Bq/mL",
        "TracerName": "FDG",
        "TracerRadionuclide": "F18",
        "InjectedRadioactivity": round(draw.injected_mbq, 2),
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a",
        "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a",
        "SpecificRadioactivityUnits": "n/a",
        "ModeOfAdministration": "bolus",
        "BodyWeight": round(draw.body_weight_kg, 1),
        "BodyWeightUnits": "kg",
        "TimeZero": "10:00:00",
        "ScanStart": 1800,
        "InjectionStart": 0,
        "FrameTimesStart": [1800],
        "FrameDuration": [1800],
        "AcquisitionMode": "list mode",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0,
        "ReconMethodName": "3D-OSEM (phantom: Gaussian PSF and noise model)",
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"],
        "ReconMethodParameterValues": [16, 4],
        "ReconFilterType": "Gaussian",
        "ReconFilterSize": round(draw.psf_fwhm_mm, 2),
        "AttenuationCorrection": "phantom: none needed (synthetic)",
        "ImageComments": "Synthetic image from bids-jdam-phantom; not a real acquisition.",
    }


def dataset_description(derivative: bool, settings: dict) -> dict:
    """dataset_description.json; GeneratedBy marks the dataset as a bids-jdam phantom."""
    description = {
        "Name": "bids-jdam phantom" + (" ground truth" if derivative else ""),
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative" if derivative else "raw",
        "License": "CC0",
        "Authors": ["bids-jdam-phantom (synthetic data)"],
        "GeneratedBy": [
            {
                "Name": GENERATOR_NAME,
                "Version": __version__,
                "Description": "Paired T1w/FDG-PET phantom from nilearn's MNI152 template; settings: "
                + json.dumps(settings, sort_keys=True),
            }
        ],
    }
    if derivative:
        description["SourceDatasets"] = [{"URL": "bids::"}]
    return description


README = """# bids-jdam phantom

Synthetic paired T1w MRI and FDG-PET images made by `bids-jdam-phantom` from nilearn's MNI152 template
(MNI152NLin2009aSym) with per-subject anatomy, uptake, transforms, bias field and noise. It is a development and
benchmarking phantom, not real data: figures measured on it are upper bounds for real data.

`derivatives/phantom/` holds the ground truth of every subject on the model grid in template space: T1w, brain
mask, region labels (dseg), gray/white-matter fractions, the true activity, the noise-free PET (Bq/mL and SUVR
against cerebellum + pons) and the applied transforms.
"""

CHANGES = "1.0.0 2026-01-01\n  - Generated by bids-jdam-phantom.\n"

PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant label"},
    "diagnosis": {"Description": "Clinical group", "Levels": {"CN": "cognitively normal", "AD": "Alzheimer's disease"}},
    "age": {"Description": "Age at the first session", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "field_strength": {"Description": "Magnetic field strength of the T1w scanner", "Units": "T"},
}


def truth_names(layout: Layout, subject: str, session: str | None) -> dict[str, Path]:
    """Paths (relative to the dataset) of one subject/session's ground-truth files."""
    folder, prefix = subject_prefix(subject, session)
    anat = TRUTH_DIR / folder / "anat"
    pet = TRUTH_DIR / folder / "pet"
    space = f"space-{TEMPLATE_NAME}"
    pet_prefix = f"{prefix}_{layout.tracer_entities}_{space}"
    return {
        "t1w": anat / f"{prefix}_{space}_T1w.nii.gz",
        "brain_mask": anat / f"{prefix}_{space}_desc-brain_mask.nii.gz",
        "dseg": anat / f"{prefix}_{space}_dseg.nii.gz",
        "dseg_tsv": anat / f"{prefix}_{space}_dseg.tsv",
        "gm_probseg": anat / f"{prefix}_{space}_label-GM_probseg.nii.gz",
        "wm_probseg": anat / f"{prefix}_{space}_label-WM_probseg.nii.gz",
        "displacement": anat / f"{prefix}_from-{TEMPLATE_NAME}_to-T1w_mode-image_xfm.nii.gz",
        "transforms": anat / f"{prefix}_from-{TEMPLATE_NAME}_to-T1w_mode-image_xfm.json",
        "pet_activity": pet / f"{pet_prefix}_desc-activity_pet.nii.gz",
        "pet_bqml": pet / f"{pet_prefix}_desc-noisefree_pet.nii.gz",
        "pet_suvr": pet / f"{pet_prefix}_desc-suvr_pet.nii.gz",
    }


def raw_names(layout: Layout, subject: str, session: str | None) -> dict[str, Path]:
    """Paths (relative to the dataset) of one subject/session's raw T1w and PET."""
    folder, prefix = subject_prefix(subject, session)
    return {
        "t1w": folder / "anat" / f"{prefix}_T1w.nii.gz",
        "pet": folder / "pet" / f"{prefix}_{layout.tracer_entities}_pet.nii.gz",
    }


def sidecar(path: Path) -> Path:
    """The JSON sidecar of a ``.nii.gz`` file."""
    return path.with_name(path.name[: -len(".nii.gz")] + ".json")
