"""Quality benchmark: JDAM, residual JDAM, CycleGAN, the unconditional SDE and the L1 U-Net.

    python -m benchmarks.quality [--minutes-per-method M] [--threads 1] [--jobs 2] [--input participant|template]
                                 [--device auto|cpu|cuda] [--smoke]

1. Data: a phantom (fast mode, 4 mm model grid, 64x64 slices as ``small_config``) of ``--train-subjects`` 3T-like
   training subjects, and ``--test-subjects`` held-out subjects (balanced CN/AD, another seed) rendered twice, 3T-like
   and 7T-like (MP2RAGE UNIT1), with the same anatomy and PET. With ``--input participant`` (the default) each
   subject's raw T1w goes through the app's own preprocessing (N4, HD-BET, registration, scaling: the participant
   workflow's model input), for training, calibration and scoring alike; ``--input template`` places the raw T1w
   by the phantom's true transform and brain mask instead (see ``quality_data``). The target is the noise-free
   template-space PET SUVR truth.
2. Training: every method for the same budget of training time: on CPU the process's CPU seconds spent inside
   training steps (fair when other jobs share the machine; run it with one thread, since OpenMP threads that spin
   while waiting for a core also count), on CUDA wall-clock seconds inside training steps (evaluations excluded).
   On CPU ``--jobs`` methods train and evaluate at once, each in its own process with ``--threads`` threads; on
   CUDA one at a time, so that wall-clock budgets stay comparable. Methods (registry entries trained by the app's
   ``fit()``): JDAM with the preconditioned denoiser, JDAM with the paper's parameterization, the unconditional SDE
   (preconditioned, no MRI channel), CycleGAN (its generator sized to the U-Net's parameter count), the L1 U-Net and
   residual JDAM (the U-Net for the mean plus a quarter-width score network for its residual, in the same budget). The
   same U-Net for the first three and the U-Net; steps reached and a learning curve (PSNR/SSIM on a few held-out 3T
   slices at evenly spaced points of the budget) per method.
3. Evaluation on every held-out subject, 3T and 7T input separately, ``--slices-per-plane`` evenly spaced slices per
   plane (axial, coronal, sagittal) from the middle 60% of the brain, the same for every method; the named sampler
   (default Heun, 18 steps); the posteriors (JDAM preconditioned, residual JDAM) as one sample and as the mean of
   ``--samples`` samples (sample k keyed by sample index k, as in the app). Metrics of ``bids_jdam.evaluate.metrics``
   per slice (PSNR with the fixed SUVR range, SSIM, MAE, NMSE in the brain mask, and the noise index of the
   synthetic PET), averaged per subject over its slices; posterior scores (``quality_probabilistic``): fair CRPS,
   spread-skill, coverage and SD-error correlation, raw and after the calibration fitted on
   ``--calibration-subjects`` (another seed: the sampler temperature with the lowest calibrated CRPS and its spread
   scale, as the app's training fits them); the AD-minus-CN parietal and temporal SUVR, synthetic vs real.
   ``--long-methods`` are then trained on to ``--long-factor`` times the budget and scored again (whether a gap
   closes with training).
4. Statistics over subjects (``quality_stats``): mean with a 95% Student-t interval; paired two-sided Wilcoxon
   signed-rank tests between JDAM (K-mean and one sample) and each other method; the gap of each method to the
   L1 U-Net (paired mean difference with its t-interval).
5. Writes ``quality-<machine>.json`` and ``.md`` (``quality-LABEL-<machine>`` with ``--label LABEL``,
   ``quality-smoke-<machine>`` with ``--smoke``) after each method.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.machine import machine_info, markdown_head, write_results
from benchmarks.quality_data import (
    load_acquired_subjects,
    load_participant_subjects,
    subjects_of,
    white_matter_probability,
)
from benchmarks.quality_probabilistic import ad_cn_differences, fit_calibration, probabilistic_rows
from benchmarks.quality_stats import paired_comparison, summarize
from bids_jdam.config import JDAMConfig, SamplerConfig, small_config
from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset
from bids_jdam.data.regions import coarse_regions
from bids_jdam.data.slices import cut_slice, pad_slice
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.evaluate.metrics import SUVR_DATA_RANGE, noise_index, uniform_white_matter_region
from bids_jdam.evaluate.validation import ValidationSlices, evaluate_slices, predict_ensemble, validation_slices
from bids_jdam.methods import METHODS as REGISTRY
from bids_jdam.models.cyclegan import CycleGAN
from bids_jdam.runtime.device import resolve_device
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.loop import Budget, fit

RESULTS = Path(__file__).resolve().parent / "results"
CPU_MINUTES_PER_METHOD = 12.0
GPU_MINUTES_PER_METHOD = 20.0
HELD_OUT_SEED_OFFSET = 1000
CALIBRATION_SEED_OFFSET = 2000  # the calibration subjects: neither trained on nor tested on
METRICS = ("psnr_db", "ssim", "mae_suvr", "nmse")
MIN_WHITE_MATTER_VOXELS = 8  # a slice's uniform white-matter region must have this many voxels for a noise index
INPUTS = {"3T": 3, "7T": 7}
DATA_NOTES = {
    "participant": "phantom (fast mode, 4 mm grid, 64x64 slices); T1w = the app's participant path: the field "
    "strength's raw acquisition through the app's N4, HD-BET, registration to the template and intensity scaling "
    "(preprocess_t1w, cached per subject), for training, calibration and scoring alike; PET target = noise-free "
    "template-space SUVR truth in the truth's brain mask",
    "template": "phantom (fast mode, 4 mm grid, 64x64 slices); T1w = the field strength's acquisition resampled "
    "onto the model grid by the phantom's true transform and brain mask (no ANTs, HD-BET or N4 preprocessing); "
    "PET target = noise-free template-space SUVR truth",
}
LONG_MARK = "@"  # result keys of the longer budget: "<method>@3x"


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper_parameterization(cfg: JDAMConfig) -> JDAMConfig:
    cfg.sde.parameterization = "paper"
    return cfg


def size_matched_cyclegan(cfg: JDAMConfig) -> JDAMConfig:
    """CycleGAN's CPU preset with the generator width (8..64) whose parameter count is closest to the U-Net's."""
    unet_parameters = parameter_count(REGISTRY.named("unet-l1").build_network(cfg))
    widths = {
        w: parameter_count(CycleGAN(dataclasses.replace(cfg.cyclegan, generator_filters=w)).mri_to_pet)
        for w in range(8, 65, 8)
    }
    width = min(widths, key=lambda w: abs(widths[w] - unet_parameters))
    cfg.cyclegan = dataclasses.replace(cfg.cyclegan, generator_filters=width)
    return cfg


def as_configured(cfg: JDAMConfig) -> JDAMConfig:
    return cfg


# result key -> (registry method, the benchmark's change to the shared configuration)
METHODS: dict[str, tuple[str, Any]] = {
    "jdam-preconditioned": ("jdam", as_configured),
    "jdam-paper": ("jdam", paper_parameterization),
    "sde-unconditional": ("sde-unconditional", as_configured),
    "cyclegan": ("cyclegan", size_matched_cyclegan),
    "unet-l1": ("unet-l1", as_configured),
    "jdam-residual": ("jdam-residual", as_configured),
}
JDAM = "jdam-preconditioned"
# Methods scored as K-sample posteriors (the others, deterministic or far behind, with one sample).
POSTERIORS = ("jdam-preconditioned", "jdam-residual")
SMOKE = {
    "train_subjects": 4,
    "test_subjects": 2,
    "calibration_subjects": 2,
    "minutes_per_method": 0.2,
    "slices_per_plane": 1,
    "samples": 2,
    "curve_points": 2,
    "curve_subjects": 1,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--minutes-per-method",
        type=float,
        help=f"training budget per method: CPU minutes inside training steps on CPU, wall-clock "
        f"minutes on CUDA (default {CPU_MINUTES_PER_METHOD:g} on CPU, "
        f"{GPU_MINUTES_PER_METHOD:g} on "
        f"CUDA)",
    )
    parser.add_argument("--train-subjects", type=int, default=24, help="3T-like training subjects")
    parser.add_argument("--test-subjects", type=int, default=12, help="held-out subjects (even: balanced CN/AD)")
    parser.add_argument(
        "--calibration-subjects",
        type=int,
        default=4,
        help="subjects (another seed, 3T-like) on which the posteriors' spread scale is fitted",
    )
    parser.add_argument("--slices-per-plane", type=int, default=4, help="evaluated slices per plane and subject")
    parser.add_argument(
        "--samples",
        type=int,
        default=8,
        help=f"K: {', '.join(POSTERIORS)} are scored as K-sample posteriors (and their K-mean)",
    )
    parser.add_argument("--sampler", default="heun", help="sampler of every diffusion method (e.g. heun, pc)")
    parser.add_argument("--sampler-steps", type=int, default=18, help="its steps (PC: N, one corrector step each)")
    parser.add_argument("--curve-points", type=int, default=4, help="learning-curve points per method")
    parser.add_argument(
        "--long-methods",
        nargs="*",
        choices=list(METHODS),
        default=[],
        help="methods then trained on to --long-factor times the budget and scored again "
        "(result keys <method>@<factor>x; their gap is to unet-l1 at the same budget)",
    )
    parser.add_argument("--long-factor", type=float, default=3.0, help="the longer budget, in budgets")
    parser.add_argument("--curve-subjects", type=int, default=4, help="held-out 3T subjects of the learning curve")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads per method")
    parser.add_argument(
        "--jobs", type=int, default=1, help="methods trained and evaluated at once on CPU (threads x jobs <= cores)"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--input",
        choices=tuple(DATA_NOTES),
        default="participant",
        help="participant: the T1w as the app preprocesses it (N4, HD-BET, registration; the default); "
        "template: the acquisition placed by the phantom's true transform, no preprocessing",
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--work", type=Path, help="where the phantoms go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help=f"results folder (default {RESULTS}; the work folder with --smoke)")
    parser.add_argument(
        "--label", help="results file quality-LABEL-<machine> (a run of some methods, kept beside the run of them all)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few-minute end-to-end check: " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()),
    )
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.test_subjects < 2 or args.test_subjects % 2:
        parser.error("--test-subjects must be even (the phantom balances CN/AD in pairs)")
    if not set(args.long_methods) <= set(args.methods) or args.long_factor <= 1:
        parser.error("--long-methods must be among --methods, and --long-factor above 1")
    if args.samples < 1 or args.slices_per_plane < 1 or args.curve_points < 1 or args.jobs < 1:
        parser.error("--samples, --slices-per-plane, --curve-points and --jobs must be at least 1")
    return args


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    return SamplerConfig(
        name=args.sampler,
        steps=args.sampler_steps,
        corrector_steps=1 if args.sampler == "pc" else 0,
        num_samples=1,
        seed=args.seed,
    )


def method_config(cfg: JDAMConfig, name: str, training: PairedSliceDataset) -> JDAMConfig:
    """The registry method's configuration for result ``name``: its fixed settings, then those from the data."""
    method_name, change = METHODS[name]
    method = REGISTRY.named(method_name)
    cfg = change(JDAMConfig.from_dict(cfg.to_dict()))
    return method.prepare(method.configure(cfg), training, from_data=True)


def delivered_model(name: str, trainer, cfg: JDAMConfig) -> torch.nn.Module:
    """What the method delivers, as the app loads it: the method's model around the trained network."""
    return REGISTRY.named(METHODS[name][0]).as_model(trainer.delivered(), cfg).eval()


def predict(
    name: str, model, cfg: JDAMConfig, data: ValidationSlices, sampler: SamplerConfig, device, samples: int
) -> torch.Tensor:
    """``[K, n, 1, H, W]``: sample k keyed by sample index k, as the app does; deterministic methods give one."""
    return predict_ensemble(REGISTRY.named(METHODS[name][0]), model, cfg, data, sampler, device, samples)


def train_method(
    name: str,
    cfg: JDAMConfig,
    training: PairedSliceDataset,
    curve_data: ValidationSlices,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[Any, JDAMConfig, dict[str, Any]]:
    """Train with the app's loop for the budget, scoring the learning curve at evenly spaced points."""
    mcfg = method_config(cfg, name, training)
    trainer = REGISTRY.named(METHODS[name][0]).trainer(mcfg, training, device, args.seed, Ranks())
    budgets = [args.minutes_per_method * point / args.curve_points for point in range(1, args.curve_points + 1)]
    return trainer, mcfg, train_to(name, trainer, mcfg, budgets, curve_data, args, device, {"learning_curve": []})


def train_to(
    name: str,
    trainer,
    mcfg: JDAMConfig,
    budgets: list[float],
    curve_data: ValidationSlices,
    args: argparse.Namespace,
    device: torch.device,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Train on to each total budget (minutes) in turn, scoring a learning-curve point at each; the updated record."""
    sampler, curve, losses = sampler_config(args), list(record["learning_curve"]), []
    for minutes in budgets:
        if device.type == "cpu":
            budget = Budget(cpu_minutes=minutes)
        else:  # wall-clock seconds inside steps
            budget = Budget(minutes=max(0.0, minutes - trainer.train_seconds / 60))
        losses += fit(trainer, budget, checkpoint_every=10**9)
        start = time.perf_counter()
        prediction = predict(name, delivered_model(name, trainer, mcfg), mcfg, curve_data, sampler, device, 1)[0]
        metrics = evaluate_slices(prediction, curve_data)
        curve.append(
            {
                "train_seconds": round(trainer.train_seconds, 1),
                "steps": trainer.step,
                "psnr_db": metrics["psnr_db"],
                "ssim": metrics["ssim"],
                "eval_seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(
            f"{name:20s} {trainer.step:6d} steps {trainer.train_seconds:7.1f} s  PSNR {metrics['psnr_db']:6.2f} dB "
            f"SSIM {metrics['ssim']:.3f}",
            flush=True,
        )
    record = {
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 1),
        "cpu_seconds": round(trainer.cpu_seconds, 1),
        "seconds_per_step": trainer.train_seconds / max(trainer.step, 1),
        "minutes": budgets[-1],
        "parameters": parameter_count(trainer.delivered()),
        "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
        "batch_size": trainer.batch_size,
        "learning_curve": curve,
    }
    if METHODS[name][1] is size_matched_cyclegan:
        record["cyclegan"] = dataclasses.asdict(mcfg.cyclegan)
    return record


def long_key(name: str, factor: float) -> str:
    """The result key of ``name`` trained on to ``factor`` times the budget (``--long-methods``)."""
    return f"{name}{LONG_MARK}{factor:g}x"


def white_matter_regions(data: ValidationSlices, wm: dict[str, np.ndarray], size: int) -> list[np.ndarray | None]:
    """Per evaluated slice, the uniform white-matter region of the noise index (None where it is too small)."""
    regions = []
    for i, (subject, plane, index) in enumerate(data.keys):
        probability = pad_slice(cut_slice(wm[subject], plane, index).astype(np.float32), plane, size)
        region = uniform_white_matter_region(probability) & data.mask[i, 0].numpy()
        regions.append(region if region.sum() >= MIN_WHITE_MATTER_VOXELS else None)
    return regions


def noise_indices(prediction: torch.Tensor, data: ValidationSlices, regions: list) -> dict[str, float]:
    """Per subject, the mean noise index over its slices that have a white-matter region."""
    per_subject: dict[str, list[float]] = {}
    for i, (subject, _, _) in enumerate(data.keys):
        if regions[i] is not None:
            mask = data.mask[i, 0].numpy()
            per_subject.setdefault(subject, []).append(
                noise_index(prediction[i, 0].float().numpy() * mask, mask, regions[i])
            )
    return {subject: float(np.mean(values)) for subject, values in per_subject.items()}


def score(prediction: torch.Tensor, data: ValidationSlices, regions: list) -> dict[str, Any]:
    per_subject = evaluate_slices(prediction, data)["per_subject"]
    scores = {metric: summarize({s: m[metric] for s, m in per_subject.items()}) for metric in METRICS}
    scores["noise_index"] = summarize(noise_indices(prediction, data, regions))
    return scores


def evaluate_method(
    name: str,
    trainer,
    mcfg: JDAMConfig,
    evaluation: dict[str, ValidationSlices],
    calibration_data: ValidationSlices,
    regions: list,
    context: dict[str, Any],
    args: argparse.Namespace,
    device,
    key: str | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Scores of one trained method on each input (``<input>`` -> ``<result key>`` -> summaries) and its extras:
    the spread calibration (fitted on the calibration subjects) and the AD-vs-CN regional differences (3T).
    ``key`` names the rows (default: the method's name)."""
    key = key or name
    sampler, model = sampler_config(args), delivered_model(name, trainer, mcfg)
    method = REGISTRY.named(METHODS[name][0])
    samples = args.samples if name in POSTERIORS else 1
    calibration = None
    if samples > 1:
        calibration = fit_calibration(
            lambda tempered: predict(name, model, mcfg, calibration_data, tempered, device, samples),
            calibration_data,
            sampler,
        )
        sampler = dataclasses.replace(sampler, temperature=calibration.temperature)
        print(
            f"{name:20s} temperature {calibration.temperature:g}, spread scale {calibration.spread_scale:.3f} "
            f"(fitted on {calibration.subjects} calibration subjects, {calibration.voxels} voxels; CRPS by "
            f"temperature {calibration.crps_by_temperature})",
            flush=True,
        )
    out: dict[str, dict[str, Any]] = {}
    extras: dict[str, Any] = {"calibration": calibration.to_dict() if calibration else None}
    reused = None
    for label, data in evaluation.items():
        start = time.perf_counter()
        if method.probabilistic and not mcfg.network.conditional and reused is not None:
            predictions, seconds = reused  # no MRI channel: the 7T "prediction" is the 3T one (same seeds)
            timing_note = {"predictions_reused_from": "3T"}
        else:
            timing_note = {}
            predictions = predict(name, model, mcfg, data, sampler, device, samples)
            seconds = time.perf_counter() - start
            reused = (predictions, seconds)
        timing = {
            "seconds": round(seconds, 1),
            "slices": len(data.keys),
            "samples": len(predictions),
            "seconds_per_slice_per_sample": seconds / (len(data.keys) * len(predictions)),
            **timing_note,
        }
        if method.probabilistic:
            timing["sampler"] = {
                "name": sampler.name,
                "steps": sampler.steps,
                "temperature": sampler.temperature,
                "network_evaluations": network_evaluations(sampler.name, sampler.steps, sampler.corrector_steps),
            }
        spacing = mcfg.grid.spacing_mm
        first = {"posterior": probabilistic_rows(predictions[:1], data, None, spacing)}
        rows = {f"{key}-1" if method.probabilistic else key: score(predictions[0], data, regions) | timing | first}
        if len(predictions) > 1:
            rows[f"{key}-k{len(predictions)}"] = (
                score(predictions.mean(0), data, regions)
                | timing
                | {"posterior": probabilistic_rows(predictions, data, calibration, spacing)}
            )
        out[label] = rows
        if label == "3T":
            extras["ad_cn"] = ad_cn_differences(
                predictions.mean(0), data, *context["labels"], context["diagnoses"], mcfg.grid.slice_size
            )
        print(
            f"{key:20s} {label}: "
            + ", ".join(f"{k} PSNR {v['psnr_db']['mean']:.2f} dB SSIM {v['ssim']['mean']:.3f}" for k, v in rows.items())
            + f" ({seconds:.0f} s)",
            flush=True,
        )
    return out, extras


def run_method(
    name: str,
    cfg: JDAMConfig,
    training: PairedSliceDataset,
    curve_data: ValidationSlices,
    evaluation: dict[str, ValidationSlices],
    calibration_data: ValidationSlices,
    regions: list,
    context: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
):
    """Train one method and score it on every input (runs in a worker process with ``--jobs`` > 1); a
    ``--long-methods`` one is then trained on to ``--long-factor`` times the budget and scored again.
    Returns [(result key, (training record, rows, extras))]."""
    configure_threads(args.threads)
    trainer, mcfg, record = train_method(name, cfg, training, curve_data, args, device)
    scored = evaluate_method(name, trainer, mcfg, evaluation, calibration_data, regions, context, args, device)
    results = [(name, (record, *scored))]
    if name in args.long_methods:
        budgets = [args.minutes_per_method * factor for factor in range(2, int(args.long_factor) + 1)]
        if args.long_factor != int(args.long_factor):
            budgets.append(args.minutes_per_method * args.long_factor)
        record = train_to(name, trainer, mcfg, budgets, curve_data, args, device, record)
        key = long_key(name, args.long_factor)
        results.append(
            (
                key,
                (
                    record,
                    *evaluate_method(
                        name, trainer, mcfg, evaluation, calibration_data, regions, context, args, device, key=key
                    ),
                ),
            )
        )
    return results


def statistics(report: dict[str, Any], samples: int) -> None:
    """Paired Wilcoxon tests of JDAM against each other method and every method's gap to the L1 U-Net."""
    report["comparisons"], report["gap_to_unet_l1"] = {}, {}
    for label in INPUTS:
        rows = report[label]
        references = [key for key in (f"{JDAM}-k{samples}", f"{JDAM}-1") if key in rows]
        report["comparisons"][label] = {
            ref: {
                other: {
                    m: paired_comparison(rows[ref][m]["per_subject"], rows[other][m]["per_subject"]) for m in METRICS
                }
                for other in rows
                if not other.startswith(JDAM) and LONG_MARK not in other
            }
            for ref in references
        }
        gaps = {key: unet_reference(key) for key in rows if not key.startswith("unet-l1")}
        report["gap_to_unet_l1"][label] = {
            key: {m: paired_comparison(rows[key][m]["per_subject"], rows[unet][m]["per_subject"]) for m in METRICS}
            for key, unet in gaps.items()
            if unet in rows
        }


def unet_reference(key: str) -> str:
    """The U-Net row a result row is compared with: the one trained for the same budget."""
    return "unet-l1" + (LONG_MARK + key.split(LONG_MARK)[1].split("-")[0] if LONG_MARK in key else "")


def fmt(summary: dict[str, Any], digits: int) -> str:
    ci = summary["ci95"]
    interval = f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""
    return f"{summary['mean']:.{digits}f}{interval}" if summary["n_subjects"] else "n/a"


def p_text(comparison: dict[str, Any]) -> str:
    p = comparison["p_value"]
    return f"{comparison['mean_difference']:+.2f}, p={p:.3g}" if p is not None else "no difference"


def posterior_table(report: dict[str, Any], label: str) -> list[str]:
    """CRPS (against the U-Net's MAE), spread-skill, coverage and SD-error correlation, raw and calibrated."""
    rows = report[label]

    lines = [
        "",
        f"Posterior scores ({label}; reference: the noise-free PET truth the models were trained on; "
        "raw = the samples as drawn, at the calibration's temperature; calibrated = those samples spread by the "
        "scale fitted on the calibration subjects):",
        "",
        "| method | CRPS raw / calibrated | calibrated CRPS / U-Net MAE | spread-skill raw / calibrated | "
        "90 % coverage raw / calibrated | "
        "50 % coverage raw / calibrated | SD-error correlation (6 mm), lowest subject |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        raw = row["posterior"]["raw"]
        cal = row["posterior"].get("calibrated", {})
        unet_mae = rows.get(unet_reference(key), {}).get("mae_suvr", {}).get("mean")
        best = cal.get("crps", raw["crps"])
        ratio = f"{best['mean'] / unet_mae:.2f}" if unet_mae else "n/a"

        def pair(metric: str, raw=raw, cal=cal) -> str:
            if metric not in raw:
                return ""
            return f"{fmt(raw[metric], 2)} / " + (fmt(cal[metric], 2) if metric in cal else "n/a")

        correlation = raw.get("sd_error_correlation")
        lowest = f"{fmt(correlation, 2)}, {min(correlation['per_subject'].values()):+.2f}" if correlation else ""
        crps = fmt(raw["crps"], 3) + (f" / {fmt(cal['crps'], 3)}" if "crps" in cal else "")
        lines.append(
            f"| {key} | {crps} | {ratio} | {pair('spread_skill_ratio')} | "
            f"{pair('coverage_90')} | {pair('coverage_50')} | {lowest} |"
        )
    return lines + ranking_table(rows)


def ranking_table(rows: dict[str, Any]) -> list[str]:
    """Whether the K-sample SD says where the error is (bids_jdam.evaluate.error_ranking), calibrated samples."""
    ranked = {key: row["posterior"] for key, row in rows.items() if "ause_relative" in row["posterior"]["raw"]}
    if not ranked:
        return []
    lines = [
        "",
        "Does the SD of the samples say where the error is (bids_jdam.evaluate.error_ranking; the calibrated "
        "samples' SD read as the predictive SD of their mean and a Gaussian, on each subject's slices; mean "
        "[95% t-interval] over subjects, worst subject)? Goals of the uncertainty issue: RMSE top / bottom SD fifth "
        ">= 1.5, AUSE / random <= 0.7, CRPS / constant band <= 0.95. Oracle: the local RMS error smoothed at 6 mm "
        "as the SD, the most a smooth map could gain over the constant band (no goal).",
        "",
        "| method | RMSE top / bottom fifth | AUSE / random | CRPS / constant band | oracle CRPS / constant band |",
        "|---|---|---|---|---|",
    ]
    for key, posterior in ranked.items():
        scores = posterior.get("calibrated", posterior["raw"])

        def cell(metric: str, worst=min, scores=scores) -> str:
            return f"{fmt(scores[metric], 2)}, {worst(scores[metric]['per_subject'].values()):.2f}"

        lines.append(
            f"| {key} | {cell('rmse_top_over_bottom_fifth')} | {cell('ause_relative', max)} | "
            f"{cell('crps_over_constant_band', max)} | {fmt(scores['oracle_crps_over_constant_band'], 2)} |"
        )
    return lines


def calibration_and_ad_cn(report: dict[str, Any]) -> list[str]:
    """The fitted spread scales and the AD-minus-CN regional SUVR differences, synthetic against real."""
    lines = ["", "## Spread calibration and AD vs CN", ""]
    for name, calibration in report["calibration"].items():
        if calibration:
            crps = "; ".join(f"{t}: {c:.4f}" for t, c in (calibration.get("crps_by_temperature") or {}).items())
            lines.append(
                f"- {name}: sampler temperature {calibration.get('temperature', 1.0):g} (calibrated fair CRPS "
                f"by temperature: {crps or 'n/a'}), spread scale {calibration['spread_scale']:.3f}, fitted "
                f"on {calibration['subjects']} calibration subjects ({calibration['voxels']} voxels, "
                f"{calibration['level']:.0%} level, K = {calibration['num_samples']})."
            )
    lines += [
        "",
        "AD minus CN mean SUVR over the evaluated 3T slices of the held-out subjects (K-mean for posteriors):",
        "",
        "| method | region | synthetic | real |",
        "|---|---|---|---|",
    ]
    for name, regions in report["ad_cn"].items():
        for region, d in (regions or {}).items():
            synthetic = "n/a" if d["ad_minus_cn_synthetic"] is None else f"{d['ad_minus_cn_synthetic']:+.3f}"
            real = "n/a" if d["ad_minus_cn_real"] is None else f"{d['ad_minus_cn_real']:+.3f}"
            lines.append(f"| {name} | {region} | {synthetic} | {real} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    s, samples = report["settings"], report["settings"]["samples"]
    lines = [
        *markdown_head(
            "Quality benchmark: JDAM against CycleGAN, the unconditional SDE and the L1 U-Net (phantom)", report
        ),
        f"Data: {report['data']['note']}  ",
        f"Training: {s['train_subjects']} subjects (3T-like), {report['data']['training_slices']} slices "
        f"(axial, coronal, sagittal); held out: {s['test_subjects']} subjects (seed {report['data']['test_seed']}, "
        f"{report['data']['test_diagnoses']}), {report['data']['evaluated_slices']} slices per input "
        f"({s['slices_per_plane']} per plane and subject, evenly spaced in the middle 60% of the brain).  ",
        f"Budget: {report['budget']['minutes_per_method']:g} min per method on {report['budget']['device']}, "
        f"{report['budget']['counted_as']}"
        + (
            f"; {', '.join(report['budget']['long_methods'])} then trained on to "
            f"{report['budget']['long_factor']:g} x the budget "
            f"(rows marked {LONG_MARK}{report['budget']['long_factor']:g}x, "
            f"compared with the U-Net at the same budget)"
            if report["budget"].get("long_methods")
            else ""
        )
        + ".  ",
        f"Sampler of the diffusion methods: {s['sampler']['name']} {s['sampler']['steps']} steps "
        f"({s['sampler']['network_evaluations']} network evaluations per slice); {', '.join(s['posteriors'])} also "
        f"as the mean of K = {samples} samples, all their samples (the -1 rows too) drawn at the sampler temperature "
        f"their calibration chose (below). Metrics: bids_jdam.evaluate.metrics (SUVR, brain mask, PSNR range "
        f"{s['suvr_data_range']} SUVR), per subject = mean over its slices; [95% Student-t interval over subjects].",
        "",
        "## Training",
        "",
        "| method | parameters | batch | steps | s/step | learning curve: steps, PSNR dB / SSIM (held-out 3T slices) |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in report["training"].items():
        curve = "; ".join(f"{p['steps']}: {p['psnr_db']:.2f} / {p['ssim']:.3f}" for p in t["learning_curve"])
        lines.append(
            f"| {name} | {t['parameters']:,} | {t['batch_size']} | {t['steps']} | "
            f"{t['seconds_per_step']:.2f} | {curve} |"
        )
    for label in INPUTS:
        lines += [
            "",
            f"## {label}-like input",
            "",
            "| method | PSNR dB | SSIM | MAE SUVR | NMSE | noise index | s/slice/sample |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, row in report[label].items():
            lines.append(
                f"| {key} | {fmt(row['psnr_db'], 2)} | {fmt(row['ssim'], 3)} | {fmt(row['mae_suvr'], 3)} | "
                f"{fmt(row['nmse'], 4)} | {fmt(row['noise_index'], 2)} | "
                f"{row['seconds_per_slice_per_sample']:.3f} |"
            )
        lines.append(f"| (noise-free true PET) | | | | | {fmt(report['truth_noise_index'], 2)} | |")
        for ref, others in report["comparisons"].get(label, {}).items():
            lines += [
                "",
                f"{ref} minus each method, paired over subjects (two-sided Wilcoxon signed-rank):",
                "",
                "| other method | PSNR dB | SSIM | ahead on PSNR and SSIM (p < 0.05) |",
                "|---|---|---|---|",
            ]
            for other, c in others.items():
                ahead = all(
                    c[m]["mean_difference"] > 0 and c[m]["p_value"] is not None and c[m]["p_value"] < 0.05
                    for m in ("psnr_db", "ssim")
                )
                lines.append(f"| {other} | {p_text(c['psnr_db'])} | {p_text(c['ssim'])} | {'yes' if ahead else 'no'} |")
        lines += posterior_table(report, label)
        gaps = report["gap_to_unet_l1"].get(label, {})
        if gaps:
            lines += [
                "",
                "Gap to the L1 U-Net (method minus U-Net, PSNR dB [95% t-interval of the paired "
                "difference]): "
                + "; ".join(
                    f"{key} {g['psnr_db']['mean_difference']:+.2f}"
                    + (
                        " [{:+.2f}, {:+.2f}]".format(*g["psnr_db"]["ci95_difference"])
                        if g["psnr_db"]["ci95_difference"]
                        else ""
                    )
                    for key, g in gaps.items()
                ),
            ]
    lines += calibration_and_ad_cn(report)
    lines += [
        "",
        "The unconditional SDE has no MRI input: its 7T-like scores are its 3T-like samples scored again. "
        "The noise index (mean brain SUVR / SD in uniform white matter) describes smoothness, not quality.",
        "Figures on phantoms are upper bounds for real data.",
    ]
    if not report["complete"]:
        lines.append(f"PARTIAL: only {', '.join(report['training'])} finished.")
    if report.get("note"):
        lines.append(f"Note: {report['note']}.")
    return "\n".join(lines) + "\n"


def results_name(args: argparse.Namespace) -> str:
    """The results file's stem before the machine: a labelled run never replaces the run of every method."""
    return "quality-smoke" if args.smoke else "-".join(["quality", *([args.label] if args.label else [])])


def result_keys(args: argparse.Namespace) -> list[str]:
    """Every result the run makes, in table order: the methods, then their longer-budget runs."""
    return list(args.methods) + [long_key(m, args.long_factor) for m in args.methods if m in args.long_methods]


def scheduled(args: argparse.Namespace) -> list[str]:
    """The methods in the order the workers take them: the longer-budget ones first (they take longest)."""
    return sorted(args.methods, key=lambda m: m not in args.long_methods)


def subject_loader(args: argparse.Namespace, cfg: JDAMConfig, dirs: dict[str, Path], work: Path):
    """``load(bids_dir, subjects)`` for ``--input``; the participant path preprocesses every subject first, ``--jobs``
    at a time, into a cache under ``work`` (a rerun with the same ``--work`` reuses it)."""
    if args.input == "template":
        return lambda bids_dir, subjects: load_acquired_subjects(bids_dir, cfg, subjects)
    prep = {bids_dir: work / f"preprocessed-{bids_dir.name}" for bids_dir in dirs.values()}
    jobs = [(bids_dir, [s]) for bids_dir in dirs.values() for s in subjects_of(bids_dir)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(load_participant_subjects, d, cfg, s, prep[d], args.threads) for d, s in jobs]:
            future.result()
    return lambda bids_dir, subjects: load_participant_subjects(bids_dir, cfg, subjects, prep[bids_dir], args.threads)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    arguments = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.quality " + " ".join(shlex.quote(a) for a in arguments)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda" and args.jobs > 1:
        raise SystemExit("quality.py: --jobs > 1 is for CPU only (CUDA budgets are wall-clock seconds)")
    if args.minutes_per_method is None:
        args.minutes_per_method = GPU_MINUTES_PER_METHOD if device.type == "cuda" else CPU_MINUTES_PER_METHOD
    work = args.work or Path(tempfile.mkdtemp(prefix="bids-jdam-quality-"))
    out = args.out or (work if args.smoke else RESULTS)
    test_seed = args.seed + HELD_OUT_SEED_OFFSET
    calibration_seed = args.seed + CALIBRATION_SEED_OFFSET
    dirs = {
        "train": work / "train-3T",
        "calibration": work / "calibration-3T",
        **{label: work / f"test-{label}" for label in INPUTS},
    }
    start = time.perf_counter()
    generate_phantom_dataset(
        dirs["train"],
        args.train_subjects,
        args.seed,
        field_strength=3,
        fast=True,
        grid_spacing_mm=4.0,
        jobs=args.threads,
    )
    generate_phantom_dataset(
        dirs["calibration"],
        args.calibration_subjects,
        calibration_seed,
        field_strength=3,
        fast=True,
        grid_spacing_mm=4.0,
        jobs=args.threads,
    )
    for label, strength in INPUTS.items():
        generate_phantom_dataset(
            dirs[label],
            args.test_subjects,
            test_seed,
            field_strength=strength,
            fast=True,
            grid_spacing_mm=4.0,
            jobs=args.threads,
        )
    phantom_seconds = time.perf_counter() - start

    cfg = small_config()
    cfg.train.seed = args.seed
    cfg.sampler = sampler_config(args)
    start = time.perf_counter()
    load = subject_loader(args, cfg, dirs, work)
    preprocessing_seconds = time.perf_counter() - start
    training = PairedSliceDataset(
        load(dirs["train"], subjects_of(dirs["train"])),
        cfg.train.planes,
        cfg.grid.slice_size,
        range_mm=cfg.grid.slice_range_mm,
    )
    test_subjects = subjects_of(dirs["3T"])
    volumes = {label: load(dirs[label], test_subjects) for label in INPUTS}
    evaluation = {label: validation_slices(v, cfg, per_plane=args.slices_per_plane) for label, v in volumes.items()}
    if evaluation["3T"].keys != evaluation["7T"].keys or not torch.equal(evaluation["3T"].pet, evaluation["7T"].pet):
        raise RuntimeError("the 3T and 7T renderings of the held-out subjects differ in anatomy or PET")
    curve_data = validation_slices(volumes["3T"][: args.curve_subjects], cfg, per_plane=1)
    calibration_data = validation_slices(
        load(dirs["calibration"], subjects_of(dirs["calibration"])), cfg, per_plane=args.slices_per_plane
    )
    wm = {s: white_matter_probability(dirs["3T"], s) for s in test_subjects}
    regions = white_matter_regions(evaluation["3T"], wm, cfg.grid.slice_size)
    sampler = sampler_config(args)
    diagnoses = [v.diagnosis for v in volumes["3T"]]
    context = {
        "labels": coarse_regions(cfg.grid.spacing_mm),
        "diagnoses": {v.subject: v.diagnosis for v in volumes["3T"]},
    }

    report: dict[str, Any] = {
        "command": command,
        "machine": machine_info(torch_threads=args.threads, jobs=args.jobs, device=str(device)),
        "phantom_version": PHANTOM_VERSION,
        "budget": {
            "minutes_per_method": args.minutes_per_method,
            "device": str(device),
            "counted_as": ("process CPU seconds" if device.type == "cpu" else "wall-clock seconds")
            + f" inside training steps, {args.jobs} method(s) at a time, each in its own process; "
            "learning-curve evaluations are not counted",
            "long_methods": list(args.long_methods),
            "long_factor": args.long_factor,
        },
        "settings": {
            "train_subjects": args.train_subjects,
            "test_subjects": args.test_subjects,
            "calibration_subjects": args.calibration_subjects,
            "calibration_seed": calibration_seed,
            "posteriors": list(POSTERIORS),
            "slices_per_plane": args.slices_per_plane,
            "samples": args.samples,
            "seed": args.seed,
            "sampler": {
                "name": sampler.name,
                "steps": sampler.steps,
                "corrector_steps": sampler.corrector_steps,
                "network_evaluations": network_evaluations(sampler.name, sampler.steps, sampler.corrector_steps),
            },
            "curve_points": args.curve_points,
            "curve_slices": len(curve_data.keys),
            "threads": args.threads,
            "suvr_data_range": SUVR_DATA_RANGE,
            "confidence_interval": "95% Student-t over subjects",
            "test": "scipy.stats.wilcoxon, paired per subject, two-sided",
            "config": cfg.to_dict(),
        },
        "data": {
            "note": DATA_NOTES[args.input],
            "input": args.input,
            "preprocessing_seconds": round(preprocessing_seconds, 1),
            "train_seed": args.seed,
            "test_seed": test_seed,
            "training_slices": len(training),
            "test_diagnoses": {d: diagnoses.count(d) for d in sorted(set(diagnoses))},
            "evaluated_slices": len(evaluation["3T"].keys),
            "phantom_seconds": round(phantom_seconds, 1),
        },
        "truth_noise_index": summarize(noise_indices(evaluation["3T"].pet, evaluation["3T"], regions)),
        "training": {},
        **{label: {} for label in INPUTS},
        "calibration": {},
        "ad_cn": {},
        "complete": False,
    }
    name = results_name(args)
    finished: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]] = {}

    def record(method: str, result: tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]) -> None:
        """Add a finished method (tables keep the --methods order) and rewrite the results."""
        finished[method] = result
        order = [m for m in result_keys(args) if m in finished]
        report["training"] = {m: finished[m][0] for m in order}
        for label in INPUTS:
            report[label] = {key: row for m in order for key, row in finished[m][1][label].items()}
        for extra in ("calibration", "ad_cn"):
            report[extra] = {m: finished[m][2].get(extra) for m in order}
        report["complete"] = len(finished) == len(result_keys(args))
        report["wall_seconds"] = round(time.perf_counter() - wall_start, 1)
        statistics(report, args.samples)
        write_results(out, name, report, markdown(report))

    inputs = (cfg, training, curve_data, evaluation, calibration_data, regions, context, args, device)
    if args.jobs == 1:
        for method in args.methods:
            for key, result in run_method(method, *inputs):
                record(key, result)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_method, method, *inputs) for method in scheduled(args)]
            for future in as_completed(futures):
                for key, result in future.result():
                    record(key, result)
    if args.work is None and not args.smoke:
        shutil.rmtree(work, ignore_errors=True)  # the phantoms of a default run are scratch; --work keeps them
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
