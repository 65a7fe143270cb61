"""Sidecars and dataset-level files of the derivative dataset: what each image is, from what and how.

Checked with ``bids-validator-deno`` 3.x: files under ``pet/`` in a derivative dataset must have ``SkullStripped``,
and images in a non-template space (``space-T1w``) must have ``SpatialReference``; the validator demands none of
the raw-PET acquisition fields there (InjectedRadioactivity, TimeZero, ScanStart, InjectionStart, FrameTimesStart,
FrameDuration, ReconMethodName, AttenuationCorrection, ...). Nothing was injected, scanned or reconstructed, so
those fields are omitted rather than filled with invented numbers; TracerName, TracerRadionuclide and Units
describe what the image stands for. SUVR is a ratio, so Units is "unitless" and the reference region is named in
Description.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from bids_jdam import __version__
from bids_jdam.bids.naming import NATIVE_SPACE, TRANSFORM_GLOB
from bids_jdam.bids.query import AnatInput
from bids_jdam.errors import InputError
from bids_jdam.io import atomic
from bids_jdam.synthesis.provenance import SynthesisProvenance
from bids_jdam.synthesis.spread import interval_half_width_in_sd

LOGGER = logging.getLogger(__name__)

PIPELINE_NAME = "bids-jdam"
# The specification version the names and sidecars were checked against; bidsschematools may be newer than the
# validator, which warns about versions it does not know.
BIDS_VERSION = "1.10.0"
CONTAINER_TYPE_ENV = "BIDS_JDAM_CONTAINER_TYPE"
CONTAINER_TAG_ENV = "BIDS_JDAM_CONTAINER_TAG"


PET_STATISTICS = {
    "mean": "Synthetic FDG-PET",
    "std": "Voxel-wise standard deviation across the posterior samples of a synthetic FDG-PET",
    "viewstd": "Voxel-wise standard deviation across the reconstructions of a synthetic FDG-PET along each sampled "
    "plane (where the 2D views disagree)",
    "predictivesd": "Voxel-wise predictive standard deviation of a one-sample synthetic FDG-PET (mean +- 1.645 SD is "
    "its central 90 % interval), from the model's single-sample error model: the log squared error "
    "of held-out subjects regressed on the distance to the brain's edge, local gradients, curvature "
    "and spread of the synthetic PET and the T1w, the uptake, the position in the slice stack and, for a "
    "model with a healthy-control reference, the healthy SD of uptake and the synthetic PET's departure from the "
    "healthy mean, and, for a method with a regression mean, how much that mean disagrees between the axial, "
    "coronal and sagittal planes and how far the sample departs from it, scaled by split-conformal factors (one per "
    "fifth of the map) fitted on those subjects (the model card's single_sample_sd record names the features)",
    "zscore": "Voxel-wise z-score of a synthetic FDG-PET against the model's healthy-control reference, z = "
    "(synthetic SUVR - healthy mean) / healthy SD, where mean and SD are voxelwise over the real FDG-PET of the "
    "model's CN training subjects (the model card's healthy_reference record names them); negative where the "
    "synthetic uptake is below the healthy controls'. A voxel's 90 % interval is z +- 1.645 x its predictive SD "
    "(desc-jdampredsd) / the healthy SD, where the predictive SD map is written; the calibrated interval of the AD "
    "meta-ROI's z (the AD-pattern score) is in the regional table's sidecar",
}


def _spatial_fields(source: AnatInput, space: str) -> dict[str, Any]:
    """Sources always; SpatialReference where the space is not a standard template (the validator requires it)."""
    fields: dict[str, Any] = {"Sources": [source.bids_uri]}
    if space == NATIVE_SPACE:
        fields["SpatialReference"] = source.bids_uri
    return fields


def _pet_description(source: AnatInput, provenance: SynthesisProvenance, statistic: str) -> str:
    """What the image is, from what and how, whether its spread is calibrated, and the warnings that apply."""
    what, model = PET_STATISTICS[statistic], provenance.model
    how = (
        f"{provenance.sampler.num_samples} sample(s), {provenance.sampler.name} sampler, "
        f"{provenance.sampler.steps} steps"
        if model.probabilistic
        else "one deterministic prediction"
    )
    scale = "z, from SUVR" if statistic == "zscore" else "SUVR"
    description = (
        f"{what} ({scale}, reference region: {provenance.reference_region}) computed from "
        f"{source.relative_path} by the bids-jdam model '{model.name}' (method {model.method}, {how}). "
        "Not a measurement: no tracer was injected and no scan was acquired."
    )
    if statistic == "std":
        description += (
            f" The samples' spread is calibrated: drawn at sampler temperature "
            f"{provenance.sampler.temperature:g} and scaled by {model.spread_scale:.4g}, both fitted on "
            "held-out subjects (the model card's calibration record). This is the SD of the samples, not of the "
            "mean image: the mean's central 90 % interval is mean +- "
            f"{interval_half_width_in_sd(provenance.sampler.num_samples, 0.9):.3f} x this SD (a Student-t "
            "prediction interval from K samples, the interval the calibration covers)."
            if model.spread_scale is not None
            else f" The samples' spread is NOT calibrated ({_spread_note(provenance)}): it is likely smaller than "
            "the error."
        )
    if provenance.model.trained_on_phantoms:
        description += " The model was trained on phantoms, not for real patients."
    if provenance.qc_failures:
        description += f" FAILED the input quality gate ({'; '.join(provenance.qc_failures)}): do not use."
    return description


def _spread_note(provenance: SynthesisProvenance) -> str:
    return dict(provenance.calibration_notes).get("spread", "the model card records no calibration for this run")


def pet_sidecar(
    source: AnatInput,
    provenance: SynthesisProvenance,
    *,
    space: str,
    statistic: str = "mean",
    skull_stripped: bool = True,
) -> dict[str, Any]:
    """Sidecar of a synthetic PET (``statistic="mean"``) or of one of its standard-deviation maps.

    ``"std"``: across the K posterior samples (the sampling spread); ``"viewstd"``: across the reconstructions
    along each sampled plane (where the 2D views disagree); ``"predictivesd"``: the one-sample predictive SD.
    """
    if statistic not in PET_STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(PET_STATISTICS)}, got {statistic!r}")
    description = _pet_description(source, provenance, statistic)
    sidecar: dict[str, Any] = {
        "Description": description,
        "SkullStripped": skull_stripped,
        **_spatial_fields(source, space),
        "TracerName": "FDG",
        "TracerRadionuclide": "F18",
        "Units": "unitless",
        "SoftwareVersions": f"bids-jdam {__version__}",
        "ModelName": provenance.model.name,
        "ModelSHA256": provenance.model.sha256,
        "ModelTrainedOnPhantoms": provenance.model.trained_on_phantoms,
        "ModelMethod": provenance.model.method,
        "SpreadCalibrationScale": provenance.model.spread_scale,
        "Sampler": provenance.sampler.name,
        "SamplerSteps": provenance.sampler.steps,
        "SamplerTemperature": provenance.sampler.temperature,
        "RandomSeed": provenance.sampler.seed,
        "NoiseKey": provenance.noise_key,
        "NumberOfSamples": provenance.sampler.num_samples,
        "SamplingPlanes": list(provenance.planes),
        "NetworkPrecision": provenance.precision,
        "SamplingDevice": provenance.device,
        "SubnormalFloatsFlushedToZero": provenance.subnormals_flushed,
        "SynthesisWallTimeSeconds": round(provenance.wall_time_s, 3),
        "QCStatus": "failed-qc" if provenance.qc_failures else "ok",
        "CalibrationNotes": dict(provenance.calibration_notes),
    }
    if provenance.qc_failures:
        sidecar["QCFailures"] = list(provenance.qc_failures)
    if source.field_strength is not None:
        sidecar["MagneticFieldStrength"] = source.field_strength
    return sidecar


def mask_sidecar(source: AnatInput, *, space: str) -> dict[str, Any]:
    """Sidecar of the brain mask the synthesis was restricted to."""
    return {
        "Type": "Brain",
        "Description": f"Brain mask of {source.relative_path}, the region where the synthetic PET is defined.",
        **_spatial_fields(source, space),
    }


def _container_from_environment() -> dict[str, str] | None:
    """Container images set these variables, so a run inside one records which image produced the outputs."""
    container_type = os.environ.get(CONTAINER_TYPE_ENV)
    container_tag = os.environ.get(CONTAINER_TAG_ENV)
    if not container_type:
        return None
    return {"Type": container_type, **({"Tag": container_tag} if container_tag else {})}


def _read_existing_description(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the existing dataset_description.json ({error})") from None
    generated_by = existing.get("GeneratedBy") if isinstance(existing, dict) else None
    names = [entry.get("Name") for entry in generated_by or [] if isinstance(entry, dict)]
    if not isinstance(existing, dict) or existing.get("DatasetType") != "derivative" or PIPELINE_NAME not in names:
        others = ", ".join(str(name) for name in names) or "not a bids-jdam derivative dataset"
        raise InputError(f"{path}: the output folder belongs to another dataset ({others}); choose another one")
    return existing


def write_dataset_description(
    out_dir: Path, *, source_dir: Path, version: str, container: dict[str, str] | None = None
) -> dict[str, Any]:
    """Create or update ``out_dir/dataset_description.json``, keeping other pipelines' GeneratedBy entries."""
    out_dir = Path(out_dir)
    path = out_dir / "dataset_description.json"
    existing = _read_existing_description(path)
    container = container or _container_from_environment()
    generated = {
        "Name": PIPELINE_NAME,
        "Version": version,
        "Description": "Synthetic FDG-PET from T1-weighted MRI (JDAM score-based diffusion model)",
    }
    if container:
        generated["Container"] = container
    raw_link = Path(source_dir).absolute().as_uri()
    description: dict[str, Any] = dict(existing or {})
    description.update(
        {
            "Name": description.get("Name", "bids-jdam: synthetic FDG-PET"),
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [entry for entry in description.get("GeneratedBy", []) if entry.get("Name") != PIPELINE_NAME]
            + [generated],
        }
    )
    sources = [entry for entry in description.get("SourceDatasets", []) if entry.get("URL") != "bids:raw:"]
    description["SourceDatasets"] = sources + [{"URL": "bids:raw:"}]
    links = dict(description.get("DatasetLinks", {}))
    if links.get("raw") not in (None, raw_link):
        LOGGER.warning("%s: the raw dataset link changes from %s to %s", path, links["raw"], raw_link)
    links["raw"] = raw_link
    description["DatasetLinks"] = links
    atomic.make_dirs(out_dir)
    atomic.write_json(path, description)
    return description


def write_bidsignore(out_dir: Path, patterns: list[str] | None = None) -> None:
    """Add ``patterns`` (default: the transforms) to ``out_dir/.bidsignore``, keeping lines already there."""
    path = Path(out_dir) / ".bidsignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines += [pattern for pattern in (patterns or [TRANSFORM_GLOB]) if pattern not in lines]
    atomic.write_text(path, "\n".join(lines) + "\n")
