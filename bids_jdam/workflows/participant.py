"""Participant level: for every selected T1w, preprocess -> quality gate -> synthesize -> derivatives -> metrics.

Each image (session, run) is its own unit of work: one that fails is reported and the participant's other images
still run. The participant's outputs are staged in a hidden folder and swapped in whole
(:class:`~bids_jdam.bids.publishing.ParticipantStaging`) under the participant's lock, so a crash, a kill or a
second run never leaves a mix of two runs that looks complete. One participant's failure does not stop the others.
This module only sequences the stages: derivatives are :mod:`bids_jdam.bids.outputs`, synthesis
:class:`~bids_jdam.synthesis.synthesizer.Synthesizer`, metrics :mod:`bids_jdam.evaluate.participant_qc`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_jdam.bids.naming import image_key
from bids_jdam.bids.outputs import write_image_derivatives
from bids_jdam.bids.publishing import ParticipantStaging, recover_interrupted_publish
from bids_jdam.bids.query import AnatInput, find_fdg_pet
from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.template import TemplateImages, load_template
from bids_jdam.diffusion.samplers import SAMPLERS
from bids_jdam.errors import InputError, failure_line
from bids_jdam.evaluate.ad_pattern import pattern_score
from bids_jdam.evaluate.atlas_suvr import regional_suvr
from bids_jdam.evaluate.metrics import image_quality
from bids_jdam.evaluate.participant_qc import image_metrics
from bids_jdam.io.locks import participant_lock
from bids_jdam.preprocess import quality_gate
from bids_jdam.preprocess.pipeline import (
    PreprocessedPair,
    PreprocessedT1w,
    native_image,
    pet_in_t1w_space,
    preprocess_pair,
    preprocess_t1w,
)
from bids_jdam.reports.participant import ReportEntry, write_participant_report
from bids_jdam.reports.regional_table import write_regional_table
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.synthesis.volume import SynthesisResult

log = logging.getLogger("bids_jdam.participant")


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


def process_participant(job: ParticipantJob, synthesizer: Synthesizer) -> ParticipantOutcome:
    """Process every image of one participant, each on its own; publish the ones that succeeded in one swap."""
    ParticipantStaging.check_targets(job.output_dir, job.subject)  # before hours of work, not after
    template = load_template(synthesizer.model.cfg.grid.spacing_mm)
    outcome = ParticipantOutcome(subject=job.subject)
    with participant_lock(job.output_dir, job.work_dir, job.subject):
        recover_interrupted_publish(job.output_dir, job.subject)
        with ParticipantStaging(job.output_dir, job.subject) as staging:
            entries = _process_images(job, synthesizer, template, staging, outcome)
            if not entries:
                staging.abandon()
                return outcome
            write_participant_report(staging.staging_dir, job.subject, entries, failed=outcome.failed)
            outcome.published = [job.output_dir / relative for relative in staging.files()]
    outcome.succeeded = [entry.stem for entry in entries]
    outcome.failed_qc = [entry.stem for entry in entries if entry.metrics.status != "ok"]
    return outcome


def _process_images(
    job: ParticipantJob,
    synthesizer: Synthesizer,
    template: TemplateImages,
    staging: ParticipantStaging,
    outcome: ParticipantOutcome,
) -> list[ReportEntry]:
    """Each image on its own: a failure is logged and recorded, its staged files dropped, the next image runs."""
    entries = []
    for anat in job.inputs:
        stem = image_stem(anat)
        try:
            entries.append(_process_image(anat, job, synthesizer, template, staging))
        except Exception as error:  # noqa: BLE001 - one image's failure must not stop the others
            log.debug("%s failed:\n%s", stem, traceback.format_exc())
            staging.discard(image_key(stem))
            message = failure_line(error)
            log.error("%s failed: %s", stem, message)
            outcome.failed[stem] = message
            if job.stop_on_first_crash:
                break
    return entries


def attach_predictive_sd(
    result: SynthesisResult, synthesizer: Synthesizer, t1: np.ndarray, mask: np.ndarray, image: str
) -> None:
    """Give ``result`` the model's predictive SD map where its sampling plan says the map applies (a one-sample
    synthesis of the kind the card's single-sample error model and regional interval were fitted on), with the
    planes' regression means where the map was fitted with them."""
    model = synthesizer.model
    if result.plan is None or not result.plan.predictive_sd or result.std is not None or model.error_model is None:
        return
    views = synthesizer.regression_views(t1, mask, image=image) if model.error_model.uses_views else None
    result.predictive_sd = model.error_model.predictive_sd(
        result.mean, t1, mask, model.cfg.grid.spacing_mm, model.healthy_reference, views
    )


def _synthesize(
    stem: str, t1: np.ndarray, mask: np.ndarray, job: ParticipantJob, synthesizer: Synthesizer
) -> SynthesisResult:
    """The job's synthesis of one image, with the predictive SD map where its sampling plan has one."""
    sampler = job.sampler
    log.info("%s: synthesizing (%s, %d steps, K=%d, planes %s) on %s", stem, sampler.name, sampler.steps,
             sampler.num_samples, ",".join(job.planes), job.device)  # fmt: skip
    result = synthesizer.synthesize(
        t1, mask, sampler, image=stem, planes=job.planes, batch_size=job.batch_size,
        progress=log.isEnabledFor(logging.INFO),
    )  # fmt: skip
    attach_predictive_sd(result, synthesizer, t1, mask, stem)
    return result


def _input_quality(
    stem: str, t1: np.ndarray, mask: np.ndarray, template: TemplateImages, prep: PreprocessedPair | PreprocessedT1w
) -> tuple[dict, list[str]]:
    """The input quality gate's measures and failures (logged: the outputs are then marked failed-qc)."""
    measures = quality_gate.measure(t1, mask, template.t1, template.brain_mask, nib.load(str(prep.brain_mask_native)))
    qc_failures = quality_gate.failures(measures)
    if qc_failures:
        log.warning("%s failed quality control (its outputs are marked failed-qc): %s", stem, "; ".join(qc_failures))
    return measures, qc_failures


def _process_image(
    anat: AnatInput,
    job: ParticipantJob,
    synthesizer: Synthesizer,
    template: TemplateImages,
    staging: ParticipantStaging,
) -> ReportEntry:
    stem = image_stem(anat)
    real_pet_path = job.real_pets.get(str(anat.path))
    prep, timings = _preprocess(anat, real_pet_path, job, synthesizer.model.cfg)
    t1 = _load(prep.t1w_model)
    mask = _load(prep.brain_mask_model) > 0.5
    measures, qc_failures = _input_quality(stem, t1, mask, template, prep)
    result = _synthesize(stem, t1, mask, job, synthesizer)
    timings["synthesis"] = result.seconds
    provenance = dataclasses.replace(
        result.provenance, wall_time_s=timings["preprocessing"] + result.seconds, qc_failures=tuple(qc_failures)
    )
    reference = synthesizer.model.healthy_reference
    maps = result.maps() | ({} if reference is None else {"zscore": reference.zscore_map(result.mean, mask)})
    native = {name: native_image(template.image(data), prep) for name, data in maps.items()}
    outputs = write_image_derivatives(anat, prep, maps, native, template, provenance, staging)

    real = _load(prep.pet_suvr_model) if real_pet_path is not None else None
    regions = regional_suvr(result.mean, mask, synthesizer.model.cfg.grid.spacing_mm, sd_map=result.std, real=real)
    plan = result.plan
    ad_pattern = (
        None if reference is None else pattern_score(regions, reference, plan.pattern_interval, plan.pattern_reason)
    )
    table = write_regional_table(anat, regions, provenance, staging, plan, reference, ad_pattern)
    native_scores = None if real is None else _native_scores(prep, outputs["native_pet"])
    metrics = image_metrics(
        anat,
        prep,
        result,
        provenance,
        real,
        mask,
        measures,
        template,
        synthesizer.model,
        dataset_identity=job.dataset_identity,
        timings=timings,
        native_scores=native_scores,
        ad_pattern=ad_pattern,
    )
    return ReportEntry(
        stem=stem,
        t1w=prep.t1w_model,
        brain_mask=prep.brain_mask_model,
        template_t1=template.image(template.t1),
        synthetic_pet=outputs["template_pet"],
        std_map=outputs.get("template_std"),
        predictive_sd_map=outputs.get("template_predictivesd"),
        view_std_map=outputs.get("template_viewstd"),
        zscore_map=outputs.get("template_zscore"),
        regional_table=table,
        real_pet=template.image(real) if real is not None else None,
        metrics=metrics,
    )


def _preprocess(
    anat: AnatInput, real_pet_path: Path | None, job: ParticipantJob, cfg: JDAMConfig
) -> tuple[PreprocessedT1w, dict[str, float]]:
    """The T1w (with its session's PET, for scoring) on the model grid, and the seconds it took per step."""
    stem = image_stem(anat)
    log.info("%s: preprocessing %s", stem, anat.relative_path)
    start = time.perf_counter()
    prep_args = dict(subject_label=stem.removeprefix("sub-"), nthreads=job.omp_nthreads, device=job.device)
    work_dir = job.work_dir / stem  # the step cache holds one image's files
    if real_pet_path is not None:
        prep = preprocess_pair(anat.path, real_pet_path, work_dir, cfg, **prep_args)
    else:
        prep = preprocess_t1w(anat.path, work_dir, cfg, **prep_args)
    timings = {"preprocessing": time.perf_counter() - start}
    timings.update({f"preprocess.{k}": v for k, v in prep.timings_s.items()})
    return prep, timings


def _native_scores(prep: PreprocessedPair, native_pet: Path) -> dict[str, float]:
    """The T1w-space synthetic PET against the real PET co-registered to the T1w, in the native brain mask."""
    real = _load(pet_in_t1w_space(prep, Path(prep.pet_static).parent / "pet_suvr_t1w.nii.gz"))
    return image_quality(_load(native_pet), real, _load(prep.brain_mask_native) > 0.5)


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def real_pet_lookup(
    layout: Any, inputs: list[AnatInput], rec: str | None, filters: dict | None
) -> dict[str, Path | None]:
    """The FDG-PET of each input's subject and session, where the dataset has one (used for scoring)."""
    return {
        str(anat.path): find_fdg_pet(layout, anat.subject, anat.session, rec=rec, filters=filters) for anat in inputs
    }


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
