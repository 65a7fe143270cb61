"""Whole-brain synthesis benchmark: wall time, PSNR/SSIM, stripes and uncertainty maps on held-out phantoms.

    python -m benchmarks.synthesis [--model demo|DIR] [--subjects 4] [--samples 4] [--threads 2]
                                   [--samples-sampler NAME] [--smoothing-mm 6] [--work DIR] [--results DIR]
                                   [--smoke]

For each held-out phantom subject (a seed the demo model never saw): the real preprocessing (N4, HD-BET, SyN, SUVR)
of its T1w and FDG-PET, then synthesis through the app's entry point (``Synthesizer.synthesize``, the model loaded
by the app's model rule) with the model's default sampler (i) along one plane, (ii) K samples along that plane
(where the model card's spread calibration applies: its temperature and scale), (iii) along three planes fused,
(iv) K samples along each of the three planes with ``--samples-sampler`` (default: the model's default sampler).
Two standard-deviation maps are scored where they exist: the sampling SD (across the K fused samples) and the view
SD (across the three planes' reconstructions, each the mean of its K samples): their Pearson correlation with the
absolute error of the mean, voxel by voxel and after Gaussian smoothing inside the mask (sigma ``--smoothing-mm``),
and their calibration (RMSE per SD quintile, spread-skill ratio), against the real PET and the noise-free truth, and
whether they say where the error is (``bids_jdam.evaluate.error_ranking``: RMSE and coverage per SD fifth, AUSE, the
CRPS against a constant-width band's) beside the goals; the default run's map also per goal (the subjects that meet
it, the farthest miss) and over every subject's voxels together (``pooled_scores``). Scores follow
``bids_jdam.evaluate.metrics`` (SUVR, template space, brain mask, fixed data range) against the preprocessed real
PET, and, for reference, against the phantom's noise-free template-space truth. The K samples are sample indices
0..K-1 of each slice's noise key, as in a participant run.
``--smoke``: one subject, K = 2, two sampler steps, to check the path. Writes
``<results>/synthesis-<machine>.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset, phantom_truth
from bids_jdam.data.slices import PLANE_AXES
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.evaluate.atlas_suvr import META_ROI_NAME, regional_suvr
from bids_jdam.evaluate.consistency import (
    PET_RESOLUTION_SIGMA_MM,
    smooth_in_mask,
    stripe_index,
    uncertainty_calibration,
    uncertainty_error_correlation,
)
from bids_jdam.evaluate.error_ranking import error_ranking_scores, pooled_scores, predictive_scale
from bids_jdam.evaluate.metrics import image_quality
from bids_jdam.evaluate.probabilistic import probabilistic_scores
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.preprocess.pipeline import preprocess_pair
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.loaded_model import DEMO_MODEL, load_model
from bids_jdam.synthesis.sampling_plan import plan_sampling
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.synthesis.volume import SynthesisResult
from bids_jdam.workflows.participant import attach_predictive_sd

HELD_OUT_SEED = 777
THREE_PLANES = ("axial", "coronal", "sagittal")
RESULTS = Path(__file__).resolve().parent / "results"


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def run_case(
    synthesizer: Synthesizer,
    image,
    t1,
    mask,
    real,
    truth,
    planes,
    samples,
    samples_sampler: str | None,
    smoothing_voxels: float,
    steps: int | None = None,
) -> tuple[dict, SynthesisResult]:
    """One synthesis of the subject through the app's entry point, scored against the real PET and the truth; the
    row and the synthesis."""
    cfg = synthesizer.model.cfg
    name = (samples_sampler or cfg.sampler.name) if samples > 1 else cfg.sampler.name
    sampler = dataclasses.replace(cfg.sampler, num_samples=samples, name=name, steps=steps or cfg.sampler.steps)
    result = synthesizer.synthesize(t1, mask, sampler, image=image, planes=planes)
    start = time.perf_counter()
    attach_predictive_sd(result, synthesizer, t1, mask, image)  # as a participant run does
    map_seconds = time.perf_counter() - start
    row = {
        "planes": list(planes),
        "num_samples": samples,
        "sampler": sampler.name,
        "steps": sampler.steps,
        "network_evaluations_per_slice": network_evaluations(sampler.name, sampler.steps, sampler.corrector_steps),
        "seconds": round(result.seconds, 2),
        "predictive_sd_seconds": round(map_seconds, 2),
        "temperature": result.provenance.sampler.temperature,
        "spread_scale": result.provenance.model.spread_scale,
        "vs_real_pet": image_quality(result.mean, real, mask),
        "vs_noise_free_truth": image_quality(result.mean, truth, mask),
        "stripe_index_axial": stripe_index(result.mean, mask, PLANE_AXES["axial"]),
        "stripe_index_axial_real_pet": stripe_index(real, mask, PLANE_AXES["axial"]),
        "uncertainty_maps": {},
    }
    smoothed_std = None if result.std is None else smooth_in_mask(result.std, mask, smoothing_voxels)
    maps = (
        ("sampling", result.std, samples),
        ("view", result.view_std, len(planes)),
        ("sampling_smoothed", smoothed_std, samples),
        ("predictive", result.predictive_sd, None),
    )
    for map_name, sd, members in maps:  # members None: the map is a predictive SD already
        if sd is None:
            continue
        scores = {}
        for reference, image in (("real_pet", real), ("noise_free_truth", truth)):
            scale = sd if members is None else predictive_scale(sd, members)
            scores[reference] = {
                "correlation_voxelwise": uncertainty_error_correlation(sd, result.mean, image, mask),
                "correlation_smoothed": uncertainty_error_correlation(sd, result.mean, image, mask, smoothing_voxels),
                "ranking": error_ranking_scores(scale, result.mean, image, mask, smoothing_voxels),
            }
            if members is not None:
                scores[reference]["calibration"] = uncertainty_calibration(sd, result.mean, image, mask, members)
        row["uncertainty_maps"][map_name] = scores
    row["regional"] = regional_scores(synthesizer, sampler, planes, result.mean, mask, real, truth)
    if samples > 1:  # the K fused samples as an ensemble (bids_jdam.evaluate.probabilistic)
        ensemble = np.stack(result.samples)
        row["probabilistic"] = {
            reference: probabilistic_scores(ensemble, image, mask)
            for reference, image in (("real_pet", real), ("noise_free_truth", truth))
        }
    return row, result


def regional_scores(synthesizer: Synthesizer, sampler, planes, mean, mask, real, truth) -> dict:
    """The image's AAL3 regional SUVR (and the AD meta-ROI) against the real PET's and the truth's, with the model
    card's regional interval where it applies to this synthesis: per-pair misses, for pooled coverage."""
    model = synthesizer.model
    interval = plan_sampling(model.card, sampler, tuple(planes)).regional_interval
    half = None if interval is None else interval.half_width_suvr
    by_reference = {}
    for reference, image in (("real_pet", real), ("noise_free_truth", truth)):
        rows = regional_suvr(mean, mask, model.cfg.grid.spacing_mm, real=image)
        errors = np.array([row.real_suvr - row.synthetic_suvr for row in rows])
        meta = next(row for row in rows if row.name == META_ROI_NAME)
        by_reference[reference] = {
            "regions": len(rows),
            "mae_suvr": float(np.mean(np.abs(errors))),
            "covered": None if half is None else int(np.sum(np.abs(errors) <= half)),
            "meta_roi": {"synthetic": meta.synthetic_suvr, "reference": meta.real_suvr},
        }
    return {"interval_half_width_suvr": half, **by_reference}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="'demo' or a model directory")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4, help="K for the uncertainty case")
    parser.add_argument("--samples-sampler", help="sampler of the K-sample case (default: the model's default)")
    parser.add_argument(
        "--smoothing-mm",
        type=float,
        default=PET_RESOLUTION_SIGMA_MM,
        help="Gaussian sigma of the smoothed SD-error correlation",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="one subject, K = 2, 2 sampler steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects, args.samples = 1, 2
    command = command_line("benchmarks.synthesis", argv)

    configure_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bids-jdam-synthesis-"))
    bids_dir = work / "phantom"
    synthesizer = Synthesizer(load_model(args.model, bids_dir, "cpu"), "cpu")
    cfg = synthesizer.model.cfg
    if not bids_dir.exists():
        generate_phantom_dataset(bids_dir, args.subjects, HELD_OUT_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm)
    report = {
        "command": command,
        "smoothing_mm": args.smoothing_mm,
        "machine": machine_info(threads=args.threads),
        "model": str(DEMO_MODEL_DIR if args.model == DEMO_MODEL else args.model),
        "model_sha256": synthesizer.model.sha256,
        "held_out_seed": HELD_OUT_SEED,
        "phantom_version": PHANTOM_VERSION,
        "subjects": [],
    }
    pooled: dict[str, list] = {"real_pet": [], "noise_free_truth": []}  # the default run's map of every subject
    for index in range(1, args.subjects + 1):
        subject = f"{index:02d}"
        start = time.perf_counter()
        prep = preprocess_pair(
            bids_dir / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz",
            bids_dir / f"sub-{subject}/pet/sub-{subject}_trc-FDG_pet.nii.gz",
            work / "prep" / f"sub-{subject}",
            cfg,
            subject_label=subject,
            nthreads=args.threads,
        )
        prep_seconds = time.perf_counter() - start
        t1, mask, real = load(prep.t1w_model), load(prep.brain_mask_model) > 0.5, load(prep.pet_suvr_model)
        truth = load(phantom_truth(bids_dir, subject).pet_suvr)
        smoothing_voxels = args.smoothing_mm / cfg.grid.spacing_mm
        runs = [
            run_case(
                synthesizer,
                f"sub-{subject}",
                t1,
                mask,
                real,
                truth,
                planes,
                k,
                args.samples_sampler,
                smoothing_voxels,
                steps=2 if args.smoke else None,
            )
            for planes, k in (
                (("axial",), 1),
                (("axial",), args.samples),
                (THREE_PLANES, 1),
                (THREE_PLANES, args.samples),
            )
        ]
        cases = [row for row, _ in runs]
        for result in (result for _, result in runs if result.predictive_sd is not None):  # the default run's map
            for reference, image in (("real_pet", real), ("noise_free_truth", truth)):
                pooled[reference].append((result.predictive_sd, result.mean, image, mask))
        report["subjects"].append(
            {
                "subject": subject,
                "diagnosis": read_diagnoses(bids_dir).get(subject),
                "preprocessing_seconds": round(prep_seconds, 1),
                "cases": cases,
            }
        )
        print(json.dumps(report["subjects"][-1], indent=1))
    report["default_map_overall"] = {
        reference: pooled_scores(images, args.smoothing_mm / cfg.grid.spacing_mm)
        for reference, images in pooled.items()
        if images
    }
    write_results(args.results, "synthesis", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        *markdown_head("Whole-brain synthesis on held-out phantom subjects", report),
        f"Model: {report['model']} (sha256 {report['model_sha256'][:12]}), phantom seed {report['held_out_seed']}",
        "",
        "| subject | planes | K | sampler (NFE/slice) | seconds (synthesis + predictive SD map) | PSNR dB (real PET) "
        "| SSIM (real PET) | PSNR dB "
        "(noise-free) | stripe index (axial) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for subject in report["subjects"]:
        for c in subject["cases"]:
            lines.append(
                f"| {subject['subject']} | {'+'.join(c['planes'])} | {c['num_samples']} | {c['sampler']} "
                f"{c['steps']} ({c['network_evaluations_per_slice']}) | {c['seconds']:.1f} + "
                f"{c['predictive_sd_seconds']:.1f} | "
                f"{c['vs_real_pet']['psnr_db']:.2f} | {c['vs_real_pet']['ssim']:.3f} | "
                f"{c['vs_noise_free_truth']['psnr_db']:.2f} | {c['stripe_index_axial']:.2f} "
                f"(real {c['stripe_index_axial_real_pet']:.2f}) |"
            )
    lines += [
        "",
        "Uncertainty maps. Sampling SD: across the K fused samples; view SD: across the three planes' "
        "reconstructions (each the mean of its K samples). Correlation: Pearson, inside the brain mask, of the "
        "SD map with the absolute error of the mean, voxelwise / after Gaussian smoothing (sigma "
        f"{report['smoothing_mm']:g} mm inside the mask). Calibration: RMSE of the mean (against the real PET) "
        "per SD quintile, and the spread-skill ratio sqrt((1 + 1/n) mean SD^2) / RMSE with n the number of "
        "members (K samples or 3 planes): 1 for a calibrated map, below 1 overconfident (the convention of "
        "bids_jdam.evaluate.probabilistic; earlier results files report its inverse).",
        "",
        "| subject | planes | K | map | corr. vs real PET | corr. vs noise-free truth | SD quintiles: mean SD -> "
        "RMSE (real PET) | spread-skill real (noise-free) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for subject in report["subjects"]:
        for c in subject["cases"]:
            for name, scores in c["uncertainty_maps"].items():
                real, truth = scores["real_pet"], scores["noise_free_truth"]
                if "calibration" not in real:  # the predictive map: in the ranking table below
                    continue
                bins = "; ".join(f"{b['mean_sd']:.3f} -> {b['rmse']:.3f}" for b in real["calibration"]["bins"])
                lines.append(
                    f"| {subject['subject']} | {'+'.join(c['planes'])} | {c['num_samples']} | {name} | "
                    f"{real['correlation_voxelwise']:+.2f} / {real['correlation_smoothed']:+.2f} | "
                    f"{truth['correlation_voxelwise']:+.2f} / {truth['correlation_smoothed']:+.2f} | {bins} | "
                    f"{real['calibration']['spread_skill_ratio']:.2f} "
                    f"({truth['calibration']['spread_skill_ratio']:.2f}) |"
                )
    lines += ranking_table(report)
    lines += goal_summary(report)
    lines += regional_table(report)
    lines += [
        "",
        "The K samples as an ensemble (bids_jdam.evaluate.probabilistic), as the app writes them (spread by "
        "the model card's calibration where it applies: temperature and scale given, else none): fair CRPS "
        "against the MAE of their mean, unbiased spread-skill ratio (1 calibrated, below 1 overconfident), "
        "coverage of the central 50 % / 90 % intervals (calibrated: 0.50 / 0.90); against the noise-free truth "
        "(real PET).",
        "",
        "| subject | planes | K | calibration | CRPS | MAE of the mean | spread-skill | coverage 50 % | "
        "coverage 90 % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for subject in report["subjects"]:
        for c in subject["cases"]:
            if "probabilistic" not in c:
                continue
            truth, real = c["probabilistic"]["noise_free_truth"], c["probabilistic"]["real_pet"]
            scale = c.get("spread_scale")
            calibration = f"T {c['temperature']:g}, scale {scale:.2f}" if scale else "none"
            lines.append(
                f"| {subject['subject']} | {'+'.join(c['planes'])} | {c['num_samples']} | {calibration} | "
                f"{truth['crps']:.4f} ({real['crps']:.4f}) | "
                f"{truth['mae_of_mean']:.4f} ({real['mae_of_mean']:.4f}) | {truth['spread_skill_ratio']:.2f} "
                f"({real['spread_skill_ratio']:.2f}) | {truth['coverage']['0.50']:.2f} ({real['coverage']['0.50']:.2f})"
                f" | {truth['coverage']['0.90']:.2f} ({real['coverage']['0.90']:.2f}) |"
            )
    lines += [
        "",
        "Preprocessing per subject in this run (s; near zero where `--work` already held the cached steps): "
        + ", ".join(f"{s['subject']}: {s['preprocessing_seconds']}" for s in report["subjects"]),
        "",
        "Figures on phantoms are upper bounds for real data.",
    ]
    return "\n".join(lines) + "\n"


def regional_table(report: dict) -> list[str]:
    """Per case, pooled over subjects: regional MAE, coverage of the regional interval, AD - CN meta-ROI."""
    lines = [
        "",
        "Regional SUVR (AAL3 regions and the AD meta-ROI, bids_jdam.evaluate.atlas_suvr) pooled over the "
        "subjects: MAE of the synthetic against the real PET's (noise-free truth's) regional SUVR, coverage of "
        "the model card's regional 90 % interval over (subject, region) pairs where it applies to the case "
        "(goal 0.85-0.95), and the AD - CN difference of the meta-ROI mean, synthetic against real (goal: at "
        "least half of the real one).",
        "",
        "| planes | K | regional MAE real (truth) | interval half-width | coverage real (truth) | "
        "meta-ROI AD - CN synthetic / real (truth) |",
        "|---|---|---|---|---|---|",
    ]
    for index, first in enumerate(report["subjects"][0]["cases"]):
        cases = [(subject, subject["cases"][index]) for subject in report["subjects"]]
        cells = []
        for reference in ("real_pet", "noise_free_truth"):
            scores = [c["regional"][reference] for _, c in cases]
            mae = np.mean([x["mae_suvr"] for x in scores])
            covered = (
                None
                if scores[0]["covered"] is None
                else (sum(x["covered"] for x in scores) / sum(x["regions"] for x in scores))
            )
            cells.append((mae, covered, _group_difference(cases, reference)))
        (mae_r, cov_r, diff_r), (mae_t, cov_t, diff_t) = cells
        half = first["regional"]["interval_half_width_suvr"]
        coverage_cell = "n/a (not fitted for this case)" if cov_r is None else f"{cov_r:.3f} ({cov_t:.3f})"
        lines.append(
            f"| {'+'.join(first['planes'])} | {first['num_samples']} | {mae_r:.4f} ({mae_t:.4f}) | "
            f"{'n/a' if half is None else f'{half:.4f}'} | {coverage_cell} | {_difference_cell(diff_r)} "
            f"({_difference_cell(diff_t)}) |"
        )
    return lines


def _group_difference(cases: list, reference: str) -> tuple[float, float] | None:
    """(synthetic, reference) AD - CN difference of the meta-ROI means; None without both groups."""
    groups: dict[str, list] = {}
    for subject, case in cases:
        groups.setdefault(subject.get("diagnosis"), []).append(case["regional"][reference]["meta_roi"])
    if not ({"AD", "CN"} <= set(groups)):
        return None
    return tuple(
        float(np.mean([m[key] for m in groups["AD"]]) - np.mean([m[key] for m in groups["CN"]]))
        for key in ("synthetic", "reference")
    )


def _difference_cell(difference: tuple[float, float] | None) -> str:
    if difference is None:
        return "n/a (one group)"
    synthetic, real = difference
    return f"{synthetic:+.3f} / {real:+.3f} = {synthetic / real:.0%}" if real else f"{synthetic:+.3f} / 0"


@dataclasses.dataclass(frozen=True)
class Goal:
    """The interval a score must lie in (either end open); called on a score, says whether it does."""

    low: float = -math.inf
    high: float = math.inf

    def __call__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def miss(self, value: float) -> float:
        """How far ``value`` lies outside the interval (0 where it meets the goal)."""
        return max(self.low - value, value - self.high, 0.0)


# The goals for a map that says where the error is: (score, goal, goal as words)
RANKING_GOALS = (
    ("coverage_90", Goal(0.85, 0.95), "90 % coverage in [0.85, 0.95]"),
    ("rmse_top_over_bottom_fifth", Goal(low=1.5), "RMSE top / bottom fifth >= 1.5"),
    ("correlation_smoothed", Goal(low=0.3), "smoothed SD-|error| correlation >= 0.3"),
    ("ause_relative", Goal(high=0.7), "AUSE / random <= 0.7"),
    ("crps_over_constant_band", Goal(high=0.95), "CRPS / constant band <= 0.95"),
)
FIFTH_COVERAGE = Goal(0.80, 0.97)  # the 90 % coverage within every fifth of the voxels ranked by the map
FIFTHS_WORDS = "90 % coverage within [0.80, 0.97] in every SD fifth"
DEFAULT_MAP = "predictive"  # the map a default run writes (one plane, K = 1)


def _reference_cell(truth: dict, real: dict, key: str) -> str:
    """A reference CRPS ratio (no goal) against the noise-free truth (real PET); blank in older results."""
    return f"{truth[key]:.2f} ({real[key]:.2f})" if truth.get(key) is not None else ""


def ranking_table(report: dict) -> list[str]:
    """Whether each map says where the error is (bids_jdam.evaluate.error_ranking), against the goals."""
    lines = [
        "",
        "Does the map say where the error is (bids_jdam.evaluate.error_ranking)? Each map read as the "
        "predictive SD of the mean (SD x sqrt(1 + 1/n), n members) and a Gaussian; sampling_smoothed: the "
        f"sampling SD smoothed (sigma {report['smoothing_mm']:g} mm inside the mask), a candidate map the app "
        "does not write. Against the noise-free truth (real PET); a goal met against the truth is marked *. "
        "Goals: " + "; ".join(words for _, _, words in RANKING_GOALS) + ". Oracle: the CRPS ratio of the image's "
        "own local RMS error smoothed at the same scale, the most a smooth map could gain on it; widths made right: "
        "the map's CRPS ratio with each twentieth of its ranking given that twentieth's RMSE on the image, what its "
        "ranking alone allows (neither has a goal).",
        "",
        "| subject | planes | K | map | "
        + " | ".join(key for key, _, _ in RANKING_GOALS)
        + " | CRPS / constant band, widths made right | oracle CRPS / constant band | RMSE per SD fifth (noise-free) "
        "| coverage per SD fifth (noise-free) |",
        "|---|---|---|---|" + "---|" * (len(RANKING_GOALS) + 4),
    ]
    for subject in report["subjects"]:
        for c in subject["cases"]:
            for name, scores in c["uncertainty_maps"].items():
                truth, real = scores["noise_free_truth"]["ranking"], scores["real_pet"]["ranking"]
                cells = [
                    f"{truth[key]:.2f}{'*' if meets(truth[key]) else ''} ({real[key]:.2f})"
                    for key, meets, _ in RANKING_GOALS
                ]
                cells += [
                    _reference_cell(truth, real, key)
                    for key in ("recalibrated_crps_over_constant_band", "oracle_crps_over_constant_band")
                ]
                lines.append(
                    f"| {subject['subject']} | {'+'.join(c['planes'])} | {c['num_samples']} | {name} | "
                    + " | ".join(cells)
                    + " | "
                    + ", ".join(f"{row['rmse']:.3f}" for row in truth["reliability"])
                    + " | "
                    + ", ".join(f"{row['coverage']:.2f}" for row in truth["reliability"])
                    + " |"
                )
    return lines


def _default_map_scores(report: dict, reference: str) -> list[tuple[str, dict]]:
    """(subject, ranking scores) of the default run's map against ``reference``, one per held-out subject."""
    return [
        (subject["subject"], c["uncertainty_maps"][DEFAULT_MAP][reference]["ranking"])
        for subject in report["subjects"]
        for c in subject["cases"]
        if DEFAULT_MAP in c["uncertainty_maps"]
    ]


def _worst_fifth(scores: dict) -> float:
    """The coverage of the SD fifth farthest outside :data:`FIFTH_COVERAGE` (the lowest where all meet it)."""
    coverages = [row["coverage"] for row in scores["reliability"]]
    return max(coverages, key=lambda c: (FIFTH_COVERAGE.miss(c), -c))


def _miss(value: float, goal: Goal) -> str:
    """By how much ``value`` misses ``goal``, in words (e.g. "0.019 above 0.95")."""
    side, bound = ("below", goal.low) if value < goal.low else ("above", goal.high)
    return f"{goal.miss(value):.3f} {side} {bound:g}"


def _miss_words(subject: str, value: float, goal: Goal) -> str:
    return f"subject {subject} {value:.3f}, {_miss(value, goal)}"


def _goal_cell(values: list[tuple[str, float]], goal: Goal) -> str:
    """How many subjects meet ``goal`` and, where some do not, the farthest miss (and, where none does, the nearest)."""
    met = sum(goal(value) for _, value in values)
    by_miss = sorted(values, key=lambda item: goal.miss(item[1]))
    cell = f"{met}/{len(values)}"
    if met < len(values):
        cell += "; farthest: " + _miss_words(*by_miss[-1], goal)
    if met == 0 and len(values) > 1:
        cell += "; nearest: " + _miss_words(*by_miss[0], goal)
    return cell


def _overall_cell(scores: dict | None, key: str | None, goal: Goal) -> str:
    """The goal's score over every held-out subject's voxels together, and by how much it misses."""
    if scores is None:
        return "n/a"
    if key is None:
        value = _worst_fifth(scores)
    elif key in scores:
        value = scores[key]
    else:
        return "per subject only"
    cell = f"{value:.3f}*" if goal(value) else f"{value:.3f} ({_miss(value, goal)})"
    return cell + _reachable(scores) if key == "crps_over_constant_band" else cell


def _reachable(scores: dict) -> str:
    """What the pooled CRPS ratio could be: with the map's ranking and the right widths, and for the oracle."""
    parts = [
        f"{words} {scores[key]:.3f}"
        for key, words in (
            ("recalibrated_crps_over_constant_band", "widths made right"),
            ("oracle_crps_over_constant_band", "oracle"),
        )
        if scores.get(key) is not None
    ]
    return f"; {', '.join(parts)}" if parts else ""


def goal_summary(report: dict) -> list[str]:
    """The issue's goals for the default run's map: per held-out subject (who meets each, and by how much the
    farthest misses) and over all held-out subjects' voxels together (the goals stated overall)."""
    goals = [*RANKING_GOALS, (None, FIFTH_COVERAGE, FIFTHS_WORDS)]
    overall = report.get("default_map_overall", {})
    lines = [
        "",
        f"The goals for the default run's map ({DEFAULT_MAP}: one plane, K = 1). Per subject: how many held-out "
        "subjects meet each and, where one does not, the subject farthest from it and by how much (where none does, "
        "also the nearest). Overall: the score over all held-out subjects' voxels together (coverage per SD fifth "
        "of the pooled ranking, AUSE, CRPS against one constant band for all, beside it the pooled CRPS ratio with "
        "the widths made right on the map's ranking and the oracle of each subject's own smoothed error, neither a "
        "goal), * where it meets the goal.",
        "",
        "| goal | per subject, noise-free truth | per subject, real PET | overall, truth | overall, real PET |",
        "|---|---|---|---|---|",
    ]
    for key, goal, words in goals:
        cells = []
        for reference in ("noise_free_truth", "real_pet"):
            scores = _default_map_scores(report, reference)
            values = [(subject, s[key] if key else _worst_fifth(s)) for subject, s in scores]
            cells.append(_goal_cell(values, goal) if values else "n/a")
        cells += [_overall_cell(overall.get(reference), key, goal) for reference in ("noise_free_truth", "real_pet")]
        escaped = words.replace("|", r"\|")  # a bare | would end the table cell
        lines.append(f"| {escaped} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
