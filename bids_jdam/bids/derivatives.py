"""Write the synthetic PET as a BIDS derivative dataset: names, sidecars, dataset_description, atomic staging.

Names follow the BIDS schema shipped with pybids (``bidsschematools``): the source image's entities and ``trc-``,
``space-``, ``res-``, ``desc-``, as far as the target file rule allows them, in the schema's entity order (so
``trc-`` comes before ``run-``: ``sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.nii.gz``), then the suffix.
A PET name carries only the subject, session and run of its T1w: a PET derivative has no ``acq-`` or ``ce-``
entity, and its ``rec-`` means a PET reconstruction, not the MR one (the query refuses inputs that would then
collide). Transforms (``_xfm``) have no rule in the specification: they are named as fMRIPrep names them
and listed in ``.bidsignore``.

Sidecar choices, checked with ``bids-validator-deno`` 3.x: files under ``pet/`` in a derivative dataset must have
``SkullStripped``, and images in a non-template space (``space-T1w``) must have ``SpatialReference``; the
validator demands none of the raw-PET acquisition fields there (InjectedRadioactivity, TimeZero, ScanStart,
InjectionStart, FrameTimesStart, FrameDuration, ReconMethodName, AttenuationCorrection, ...). Nothing was
injected, scanned or reconstructed, so those fields are omitted rather than filled with invented numbers;
TracerName, TracerRadionuclide and Units describe what the image stands for. SUVR is a ratio, so Units is
"unitless" and the reference region is named in Description.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from bidsschematools import schema as bids_schema

from bids_jdam import __version__
from bids_jdam.bids.query import AnatInput
from bids_jdam.errors import InputError
from bids_jdam.io import atomic, write_gate
from bids_jdam.synthesis.provenance import SynthesisProvenance

LOGGER = logging.getLogger(__name__)

PIPELINE_NAME = "bids-jdam"
TEMPLATE_SPACE = "MNI152NLin2009aSym"
NATIVE_SPACE = "T1w"
DERIVED_ENTITIES = ("trc", "space", "res", "desc")
PET_SOURCE_ENTITIES = ("sub", "ses", "run")
TRANSFORM_GLOB = "*_xfm.*"
# The specification version the names and sidecars were checked against; bidsschematools may be newer than the
# validator, which warns about versions it does not know.
BIDS_VERSION = "1.10.0"
CONTAINER_TYPE_ENV = "BIDS_JDAM_CONTAINER_TYPE"
CONTAINER_TAG_ENV = "BIDS_JDAM_CONTAINER_TAG"


@lru_cache(maxsize=1)
def _schema() -> Any:
    return bids_schema.load_schema()


@lru_cache(maxsize=None)
def _entity_order() -> tuple[str, ...]:
    """Short entity keys (sub, ses, ..., desc) in the order the specification fixes for file names."""
    schema = _schema()
    return tuple(schema.objects.entities[name].name for name in schema.rules.entities)


@lru_cache(maxsize=None)
def _allowed_entities(suffix: str, datatype: str) -> frozenset[str]:
    """Short entity keys that the derivative file rule for ``datatype/suffix`` accepts."""
    schema = _schema()
    for rules in schema.rules.files.deriv.values():
        for rule in rules.values():
            if suffix in (rule.get("suffixes") or []) and datatype in (rule.get("datatypes") or []):
                if "template" in rule.entities:
                    continue
                return frozenset(schema.objects.entities[name].name for name in rule.entities)
    raise ValueError(f"the BIDS schema has no derivative rule for {datatype}/*_{suffix}")


def _join_entities(entities: Mapping[str, str]) -> str:
    order = _entity_order()
    ordered = sorted(entities.items(), key=lambda item: order.index(item[0]))
    for key, value in ordered:
        if not str(value).isalnum():
            raise ValueError(f"BIDS label {key}-{value} must be letters and digits only")
    return "_".join(f"{key}-{value}" for key, value in ordered)


def _datatype_for(suffix: str) -> str:
    return "pet" if suffix == "pet" else "anat"


def derivative_name(
    source_entities: Mapping[str, str],
    *,
    space: str,
    desc: str | None,
    suffix: str,
    extension: str,
    trc: str | None = None,
    res: str | None = None,
) -> str:
    """``sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.nii.gz`` from the source's short-key entities."""
    datatype = _datatype_for(suffix)
    allowed = _allowed_entities(suffix, datatype)
    carried = PET_SOURCE_ENTITIES if datatype == "pet" else allowed
    entities = {
        key: value
        for key, value in source_entities.items()
        if key in allowed and key in carried and key not in DERIVED_ENTITIES
    }
    derived = {"trc": trc, "space": space, "res": res, "desc": desc}
    entities.update({key: value for key, value in derived.items() if value is not None and key in allowed})
    return f"{_join_entities(entities)}_{suffix}{extension}"


def _subject_folder(source_entities: Mapping[str, str], datatype: str) -> Path:
    folder = Path(f"sub-{source_entities['sub']}")
    if "ses" in source_entities:
        folder /= f"ses-{source_entities['ses']}"
    return folder / datatype


def derivative_path(
    source_entities: Mapping[str, str],
    *,
    space: str,
    desc: str | None,
    suffix: str,
    extension: str,
    trc: str | None = None,
    res: str | None = None,
) -> Path:
    """The output path relative to the derivative dataset: ``sub-01/[ses-A/]pet/<derivative_name>``."""
    name = derivative_name(
        source_entities, space=space, desc=desc, suffix=suffix, extension=extension, trc=trc, res=res
    )
    return _subject_folder(source_entities, _datatype_for(suffix)) / name


def transform_path(
    source_entities: Mapping[str, str], *, from_space: str, to_space: str, extension: str, mode: str = "image"
) -> Path:
    """``sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5`` (fMRIPrep's convention)."""
    allowed = _allowed_entities("mask", "anat")
    entities = {key: value for key, value in source_entities.items() if key in allowed and key not in DERIVED_ENTITIES}
    for label in (from_space, to_space, mode):
        if not label.isalnum():
            raise ValueError(f"BIDS label {label!r} must be letters and digits only")
    name = f"{_join_entities(entities)}_from-{from_space}_to-{to_space}_mode-{mode}_xfm{extension}"
    return _subject_folder(source_entities, "anat") / name


PET_STATISTICS = {
    "mean": "Synthetic FDG-PET",
    "std": "Voxel-wise standard deviation across the posterior samples of a synthetic FDG-PET",
    "viewstd": "Voxel-wise standard deviation across the reconstructions of a synthetic FDG-PET along each sampled "
    "plane (where the 2D views disagree)",
    "predictivesd": "Voxel-wise predictive standard deviation of a one-sample synthetic FDG-PET (mean +- 1.645 SD is "
    "its central 90 % interval), from the model's single-sample error model: the log squared error "
    "of held-out subjects regressed on the distance to the brain's edge, local gradients, curvature "
    "and spread of the synthetic PET and the T1w, the uptake and the position in the slice stack, "
    "scaled by a split-conformal factor fitted on those subjects (the "
    "model card's single_sample_sd record)",
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
    description = (
        f"{what} (SUVR, reference region: {provenance.reference_region}) computed from "
        f"{source.relative_path} by the bids-jdam model '{model.name}' (method {model.method}, {how}). "
        "Not a measurement: no tracer was injected and no scan was acquired."
    )
    if statistic == "std":
        description += (
            f" The samples' spread is calibrated: drawn at sampler temperature "
            f"{provenance.sampler.temperature:g} and scaled by {model.spread_scale:.4g}, both fitted on "
            "held-out subjects (the model card's calibration record)."
            if model.spread_scale is not None
            else " The samples' spread is NOT calibrated (the model card records no calibration, or one "
            "fitted for another sampler or plane count): it is likely smaller than the error."
        )
    if provenance.model.trained_on_phantoms:
        description += " The model was trained on phantoms, not for real patients."
    if provenance.qc_failures:
        description += f" FAILED the input quality gate ({'; '.join(provenance.qc_failures)}): do not use."
    return description


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


STAGING_PREFIX = ".staging-sub-"
REPLACED_PREFIX = ".replaced-sub-"


def image_key(file_name: str) -> tuple[str | None, str | None]:
    """(session, run) of an output file from its name: which image of a participant the file belongs to."""
    entities = dict(part.split("-", 1) for part in file_name.split(".", 1)[0].split("_") if "-" in part)
    return entities.get("ses"), entities.get("run")


class ParticipantStaging:
    """Build one participant's new outputs in a hidden folder of ``out_dir`` and swap them in whole on success.

    Use ``staging.path(relative)`` for every output (``sub-X/...`` and ``sub-X.html``). On a clean exit the new
    ``sub-X`` folder receives the earlier run's files of the images this run did not produce (another session, an
    image that failed now), then replaces the old folder by two renames, and the report follows; a reader sees the
    old folder, no folder (clearly incomplete, restored by the next run: :func:`recover_interrupted_publish`) or the
    new one, never a mix of two runs. On an exception the staging folder is deleted and ``out_dir`` is untouched.
    The caller holds the participant's lock.
    """

    def __init__(self, out_dir: Path, subject: str) -> None:
        self.out_dir = Path(out_dir)
        self.subject_id = f"sub-{subject}"
        self.staging_dir = self.out_dir / f"{STAGING_PREFIX}{subject}-{uuid.uuid4().hex}"
        self.abandoned = False

    @staticmethod
    def check_targets(out_dir: Path, subject: str) -> None:
        """The participant's folder and report must not lead into the input (a symlinked ``OUT/sub-X``)."""
        write_gate.check(Path(out_dir) / f"sub-{subject}", "participant folder")
        write_gate.check(Path(out_dir) / f"sub-{subject}.html", "participant report")

    def __enter__(self) -> ParticipantStaging:
        self.check_targets(self.out_dir, self.subject_id[4:])
        atomic.make_dirs(self.staging_dir)
        return self

    def path(self, relative: Path | str) -> Path:
        """Where to write the output that will end up at ``out_dir/relative`` (parent folders created)."""
        staged = self.staging_dir / relative
        atomic.make_dirs(staged.parent)
        return staged

    def files(self) -> list[Path]:
        """Every staged file, relative to the staging folder (= where it will be in ``out_dir``)."""
        return sorted(p.relative_to(self.staging_dir) for p in self.staging_dir.rglob("*") if p.is_file())

    def discard(self, key: tuple[str | None, str | None]) -> None:
        """Drop the staged files of one image (``image_key``): it failed, the others go on."""
        for relative in self.files():
            if image_key(relative.name) == key:
                (self.staging_dir / relative).unlink()

    def abandon(self) -> None:
        """Publish nothing at the end (no image succeeded): ``out_dir`` stays as it was."""
        self.abandoned = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if exc_type is None and not self.abandoned:
                self._publish()
        finally:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def _publish(self) -> None:
        new_folder = self.staging_dir / self.subject_id
        old_folder = self.out_dir / self.subject_id
        atomic.make_dirs(new_folder)
        _carry_forward(old_folder, new_folder)
        report = self.out_dir / f"{self.subject_id}.html"
        staged_report = self.staging_dir / report.name
        if staged_report.exists():
            report.unlink(missing_ok=True)  # no report is better than one describing the old folder
        replaced = self.out_dir / f"{REPLACED_PREFIX}{self.subject_id[4:]}-{uuid.uuid4().hex}"
        if old_folder.exists() or old_folder.is_symlink():
            os.rename(old_folder, replaced)
        atomic.move(new_folder, old_folder)
        if staged_report.exists():
            atomic.move(staged_report, report)
        _remove_tree(replaced)


def _carry_forward(old_folder: Path, new_folder: Path) -> None:
    """Hard-link (or copy) into ``new_folder`` the old files of images that have no output in ``new_folder``.

    Only real files inside real folders are carried: a symlink (to the input, say) is never followed.
    """
    if not old_folder.is_dir() or old_folder.is_symlink():
        return
    produced = {image_key(p.name) for p in new_folder.rglob("*") if p.is_file()}
    for old in sorted(p for p in old_folder.rglob("*") if p.is_file() and not _through_symlink(p, old_folder)):
        if image_key(old.name) in produced:
            continue
        target = new_folder / old.relative_to(old_folder)
        if target.exists():
            continue
        atomic.make_dirs(target.parent)
        try:
            os.link(old, target)
        except OSError:
            atomic.copy_file(old, target)


def _through_symlink(path: Path, root: Path) -> bool:
    """Whether ``path`` or a folder between it and ``root`` is a symlink."""
    folders = [root / parent for parent in path.relative_to(root).parents if parent != Path(".")]
    return path.is_symlink() or any(folder.is_symlink() for folder in folders)


def _remove_tree(path: Path) -> None:
    """Delete a replaced participant folder; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def recover_interrupted_publish(out_dir: Path, subject: str) -> None:
    """Undo what a run killed while publishing left (the caller holds the participant's lock).

    A missing ``sub-X`` with a ``.replaced-sub-X-*`` beside it is the old folder, put back; a replaced folder
    beside a present ``sub-X`` and every staging folder of the participant are leftovers, deleted.
    """
    out_dir = Path(out_dir)
    folder = out_dir / f"sub-{subject}"
    for replaced in sorted(out_dir.glob(f"{REPLACED_PREFIX}{subject}-*")):
        if not (folder.exists() or folder.is_symlink()):
            os.rename(replaced, folder)
        else:
            _remove_tree(replaced)
    for stale in out_dir.glob(f"{STAGING_PREFIX}{subject}-*"):
        shutil.rmtree(stale, ignore_errors=True)
