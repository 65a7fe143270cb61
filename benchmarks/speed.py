"""Samplers against the paper's PC sampler: quality, sharpness, spread and speed on held-out phantom slices.

    python -m benchmarks.speed [--model demo|DIR] [--subjects 2] [--per-plane 3] [--samples 2] [--threads 2]
                               [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16] [--compile]
                               [--batch-size 32] [--results DIR] [--smoke]

On a fixed subset of held-out slices (``--per-plane`` evenly spaced per plane per subject in the middle 60 % of the
brain, of phantom subjects from a seed the model never saw, taken as a user's run takes them: each raw T1w through
the app's own preprocessing (N4, HD-BET, registration to the template, intensity scaling; see
``benchmarks.quality_data.load_participant_subjects``), scored against the noise-free template-space PET truth; a
``--per-plane`` larger than that range, such as the GPU check's 100, takes every slice in it) every sampler/step
setting draws ``--samples`` independent samples per slice (sample indices 0..S-1 of each slice's noise key, as the
app draws K samples; the same for every setting). The model is loaded by the app's model rule and runs through its
synthesis entry point (``bids_jdam.synthesis.synthesizer.Synthesizer``: ``InferenceDenoiser``'s precision, memory
layout and optional compilation, set up once): held-out slices through ``Synthesizer.predict_slices`` (with the
noise keys, batches and metrics of ``bids_jdam.evaluate.validation``), whole brains through
``Synthesizer.synthesize``. For each setting: PSNR/SSIM against the PET truth (protocol of
``bids_jdam.evaluate.metrics``) of single samples (K = 1), averaged over the S samples; the network evaluations per
slice; the measured seconds per slice; a sharpness ratio: the high-frequency share of the radially averaged power
spectrum of the synthetic slices over that of the truth's (1 = as sharp as the truth); and the sample spread: the
RMS over brain pixels of the per-pixel standard deviation across the S samples. A sampler that wins PSNR by
collapsing towards the posterior mean shows a lower sharpness or spread than the reference, PC with N = 1000. The
default-sampler rule (fewest evaluations within 0.3 dB PSNR and 0.005 SSIM of PC-1000, sharpness and spread not
lower than PC-1000's by more than 10 %) is applied to the measured rows. Then whole brains: the first held-out
subject's preprocessed T1w through ``Synthesizer.synthesize`` with the model's default sampler (and the chosen one,
if any), along one plane and three planes fused, K = 1: wall time, batch size and peak memory (CPU: the process's
peak RSS; CUDA: peak allocated). On CUDA the network runs in bf16 autocast, channels-last, optionally compiled, and
the batch is sized from free memory. ``--smoke``: two settings of two steps on one subject, one slice per plane,
whole brains with two steps, to check the path in seconds. Writes ``<results>/speed-<machine>.{json,md}`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import command_line, machine_info, markdown_head, peak_memory_gb, write_results
from benchmarks.quality_data import load_participant_subjects
from bids_jdam.config import PRECISIONS, SamplerConfig
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.evaluate.validation import evaluate_slices, predict_slices, validation_slices
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.runtime.device import resolve_device
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.loaded_model import DEMO_MODEL, load_model
from bids_jdam.synthesis.sampling_plan import plan_sampling
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows.run_config import DEFAULT_PLANES

HELD_OUT_SEED = 778
SETTINGS = [
    ("pc", 1000),
    ("pc", 100),
    ("heun", 10),
    ("heun", 18),
    ("heun_stochastic", 18),
    ("heun_stochastic", 25),
    ("dpmpp_2m", 20),
    ("ancestral", 10),
    ("ancestral", 18),
    ("ancestral", 25),
    ("ancestral", 35),
    ("ancestral", 50),
]
SMOKE_SETTINGS = [("pc", 2), ("heun", 2)]
RESULTS = Path(__file__).resolve().parent / "results"


class SynthesizerSlices:
    """``evaluate.validation.predict_slices``'s slice predictor as the synthesis entry point's own prediction."""

    probabilistic = True

    def __init__(self, synthesizer: Synthesizer):
        self.synthesizer = synthesizer

    def predict(
        self, model, cfg, mri: torch.Tensor, keys: list, sampler: SamplerConfig, device: torch.device
    ) -> torch.Tensor:
        return self.synthesizer.predict_slices(mri.to(device), keys, sampler)


def high_frequency_share(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of spectral power above half the Nyquist radius, averaged over slices (brain-masked)."""
    shares = []
    for image, mask in zip(images[:, 0].numpy(), masks[:, 0].numpy()):
        spectrum = np.abs(np.fft.fftshift(np.fft.fft2(np.where(mask, image, 0)))) ** 2
        size = spectrum.shape[0]
        y, x = np.indices(spectrum.shape) - size // 2
        radius = np.hypot(x, y)
        total = spectrum[radius > 0].sum()
        shares.append(spectrum[radius > size / 4].sum() / total if total > 0 else np.nan)
    return float(np.nanmean(shares))


def sample_spread(predictions: list[torch.Tensor], masks: torch.Tensor) -> float:
    """Root mean square, over brain pixels, of the per-pixel standard deviation across independent samples.

    A sampler that collapses towards the posterior mean (and so wins PSNR by smoothing) shows a small spread.
    """
    std = torch.stack(predictions).float().std(dim=0, unbiased=True)
    return float(std[masks].pow(2).mean().sqrt())


def measure_setting(
    slices: SynthesizerSlices,
    data,
    cfg,
    device: torch.device,
    samples: int,
    batch_size: int,
    truth_share: float,
    sampler: SamplerConfig,
) -> dict:
    """One sampler setting on the held-out slices: ``samples`` independent single samples, their scores and time."""
    predictions, scores, seconds = [], [], 0.0
    for sample in range(samples):
        start = time.perf_counter()
        predictions.append(
            predict_slices(
                slices, None, cfg, data.mri, data.keys, sampler, device, sample=sample, batch_size=batch_size
            )
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        scores.append(evaluate_slices(predictions[-1], data))
    return {
        "sampler": sampler.name,
        "steps": sampler.steps,
        "temperature": sampler.temperature,
        "network_evaluations_per_slice": network_evaluations(sampler.name, sampler.steps, sampler.corrector_steps),
        "psnr_db": float(np.mean([s["psnr_db"] for s in scores])),
        "ssim": float(np.mean([s["ssim"] for s in scores])),
        "psnr_db_per_sample": [s["psnr_db"] for s in scores],
        "ssim_per_sample": [s["ssim"] for s in scores],
        "seconds_per_slice": seconds / (len(data.keys) * samples),
        "sharpness_ratio": float(np.mean([high_frequency_share(p * data.mask, data.mask) for p in predictions]))
        / truth_share,
        "sample_spread": sample_spread(predictions, data.mask) if samples > 1 else None,
    }


def whole_brain_timing(synthesizer: Synthesizer, subject, sampler_cfg: SamplerConfig, planes: tuple[str, ...]) -> dict:
    """One subject's whole brain through the synthesis entry point: seconds, batch size, peak memory."""
    device = synthesizer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = synthesizer.synthesize(
        subject.t1, subject.brain_mask, sampler_cfg, image=f"sub-{subject.subject}", planes=planes
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row = {
        "sampler": sampler_cfg.name,
        "steps": sampler_cfg.steps,
        "planes": list(planes),
        "slices": result.network_evaluations
        // network_evaluations(sampler_cfg.name, sampler_cfg.steps, sampler_cfg.corrector_steps),
        "seconds": round(result.seconds, 2),
        "batch_size": result.batch_size,
        "peak_memory_gb": round(peak_memory_gb(device), 2),
    }
    print(json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--per-plane", type=int, default=3)
    parser.add_argument(
        "--samples",
        type=int,
        default=2,
        help="independent samples per slice (sample indices 0..S-1); scores are single-sample means (K = 1)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per sampler call")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--settings",
        nargs="+",
        metavar="NAME:STEPS",
        help="sampler settings to measure (default: all; the first is the reference)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the path in seconds: pc:2 and heun:2, one subject, one slice per plane",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects, args.per_plane, args.settings = 1, 1, [f"{n}:{k}" for n, k in SMOKE_SETTINGS]
    command = command_line("benchmarks.speed", argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(threads=args.threads, device=str(device))  # before the runs: the load they start under
    settings = [(n, int(k)) for n, k in (item.split(":") for item in args.settings)] if args.settings else SETTINGS
    bids_dir = Path(tempfile.mkdtemp(prefix="bids-jdam-speed-")) / "phantom"
    synthesizer = Synthesizer(load_model(args.model, bids_dir, device), device, args.precision, args.compile)
    cfg = synthesizer.model.cfg
    slices = SynthesizerSlices(synthesizer)
    generate_phantom_dataset(bids_dir, args.subjects, HELD_OUT_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm)
    subjects = [f"{i:02d}" for i in range(1, args.subjects + 1)]
    volumes = load_participant_subjects(bids_dir, cfg, subjects, bids_dir.parent / "prep", args.threads)
    data = validation_slices(volumes, cfg, per_plane=args.per_plane)
    truth_share = high_frequency_share(data.pet, data.mask)
    measure = partial(measure_setting, slices, data, cfg, device, args.samples, args.batch_size, truth_share)
    rows = []
    for name, steps in settings:
        rows.append(measure(SamplerConfig(name=name, steps=steps, corrector_steps=1 if name == "pc" else 0, seed=0)))
        print(json.dumps(rows[-1]))
    # The model's sampler as a default participant run draws it (the app's own sampling decision).
    default_plan = plan_sampling(synthesizer.model.card, replace(cfg.sampler, num_samples=1, seed=0), DEFAULT_PLANES)
    as_run = None if args.smoke else measure(default_plan.sampler)
    if as_run:
        print(json.dumps(as_run))
    reference = rows[0]
    eligible = [
        r
        for r in rows[1:]
        if r["psnr_db"] >= reference["psnr_db"] - 0.3
        and r["ssim"] >= reference["ssim"] - 0.005
        and r["sharpness_ratio"] >= 0.9 * reference["sharpness_ratio"]
        and (r["sample_spread"] is None or r["sample_spread"] >= 0.9 * reference["sample_spread"])
    ]
    chosen = min(eligible, key=lambda r: r["network_evaluations_per_slice"]) if eligible else None
    whole_brain_samplers = [replace(cfg.sampler, num_samples=1, seed=0, **({"steps": 2} if args.smoke else {}))]
    if chosen and (chosen["sampler"], chosen["steps"]) != (cfg.sampler.name, cfg.sampler.steps) and not args.smoke:
        whole_brain_samplers.append(
            SamplerConfig(
                name=chosen["sampler"], steps=chosen["steps"], corrector_steps=1 if chosen["sampler"] == "pc" else 0
            )
        )
    whole_brain = [
        whole_brain_timing(synthesizer, volumes[0], sampler_cfg, planes)
        for sampler_cfg in whole_brain_samplers
        for planes in (("axial",), ("axial", "coronal", "sagittal"))
    ]
    report = {
        "command": command,
        "machine": machine,
        "model": str(DEMO_MODEL_DIR if args.model == DEMO_MODEL else args.model),
        "precision": synthesizer.precision,
        "compiled": args.compile,
        "whole_brain": whole_brain,
        "model_sha256": synthesizer.model.sha256,
        "held_out_seed": HELD_OUT_SEED,
        "phantom_version": PHANTOM_VERSION,
        "n_slices": len(data.keys),
        "data": "the app's participant path: raw T1w through its preprocessing; PET target: the noise-free truth",
        "planes": list(cfg.train.planes),
        "rows": rows,
        "samples": args.samples,
        "default_run_sampling": default_plan.spread_reason,
        "default_as_run": as_run,
        "default_rule": "fewest NFE within 0.3 dB PSNR and 0.005 SSIM of pc-1000 (means of single samples), "
        "sharpness and sample spread >= 90% of pc-1000's",
        "chosen": chosen,
    }
    write_results(args.results, "speed", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        *markdown_head("Samplers against PC-1000 on held-out phantom slices", report),
        f"Model: {report['model']} (sha256 {report['model_sha256'][:12]}); {report['n_slices']} slices "
        f"({', '.join(report['planes'])}), phantom seed {report['held_out_seed']}; K = 1: PSNR and SSIM are means over "
        f"{report['samples']} independent samples per slice (per sample in brackets)  ",
        f"Data: {report['data']}",
        "",
        "| sampler | steps | temperature | NFE/slice | PSNR dB | SSIM | sharpness (1 = PET truth) "
        "| sample spread (SUVR) | s/slice |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    as_run = [] if report["default_as_run"] is None else [report["default_as_run"]]
    for r in report["rows"] + as_run:
        psnrs = ", ".join(f"{v:.2f}" for v in r["psnr_db_per_sample"])
        spread = "" if r["sample_spread"] is None else f"{r['sample_spread']:.4f}"
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['temperature']:g}{' (default run)' if r in as_run else ''} "
            f"| {r['network_evaluations_per_slice']} | {r['psnr_db']:.2f} ({psnrs}) | {r['ssim']:.4f} "
            f"| {r['sharpness_ratio']:.2f} | {spread} | {r['seconds_per_slice']:.3f} |"
        )
    lines += [
        "",
        f"Whole brain, one subject, K = 1, network precision {report['precision']}"
        f"{', compiled' if report['compiled'] else ''}:",
        "",
        "| sampler | steps | planes | slices | seconds | batch | peak memory GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["whole_brain"]:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {'+'.join(r['planes'])} | {r['slices']} | {r['seconds']:.1f} "
            f"| {r['batch_size']} | {r['peak_memory_gb']:.2f} |"
        )
    chosen = report["chosen"]
    lines += [
        "",
        f"Rule: {report['default_rule']}.",
        f"Chosen: {chosen['sampler']} {chosen['steps']} ({chosen['network_evaluations_per_slice']} NFE)."
        if chosen
        else "Chosen: none of the faster settings met the rule on this run.",
    ]
    if as_run:
        lines += [
            "",
            "The rule compares the samplers at temperature 1 (each as it is). The default-run row (not in the rule) "
            f"draws as a default participant run does; its sampling: {report['default_run_sampling']}. The "
            "whole-brain rows ran as the app runs them. A sampler chosen here becomes a default only with the card's "
            "calibrations refitted for it.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
