"""Samplers against the paper's PC sampler: quality, sharpness, spread and speed on held-out phantom slices.

    python benchmarks/speed.py [--model demo|DIR] [--subjects 2] [--per-plane 3] [--samples 2] [--threads 2]
                               [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16] [--compile]
                               [--batch-size 32] [--results DIR]

On a fixed subset of held-out slices (``--per-plane`` evenly spaced per plane per subject in the middle 60 % of the
brain, from the phantom's template-space truth, a seed the model never saw; a ``--per-plane`` larger than that
range, such as the GPU check's 100, takes every slice in it) every sampler/step setting draws ``--samples``
independent samples per slice (seeds 0..S-1, the same for every setting). For each setting: PSNR/SSIM against the
real PET (protocol of ``bids_jdam.evaluate.metrics``) of single samples (K = 1), averaged over the S samples; the
network evaluations per slice; the measured seconds per slice; a sharpness ratio: the high-frequency share of the
radially averaged power spectrum of the synthetic slices over that of the real ones (1 = as sharp as the real PET);
and the sample spread: the RMS over brain pixels of the per-pixel standard deviation across the S samples. A
sampler that wins PSNR by collapsing towards the posterior mean shows a lower sharpness or spread than the
reference, PC with N = 1000. The default-sampler rule of issue 9 (fewest evaluations within 0.3 dB PSNR and 0.005
SSIM of PC-1000, sharpness and spread not lower than PC-1000's by more than 10 %) is applied to the measured rows.
Then whole brains: the first held-out subject's template-space T1w through ``synthesize_volume`` with the model's
default sampler (and the chosen one, if any), along one plane and three planes fused, K = 1: wall time, batch size
and peak memory (CPU: the process's peak RSS; CUDA: peak allocated). On CUDA the network runs through
``InferenceDenoiser`` (bf16 autocast, channels-last, optionally compiled) and the batch is sized from free memory.
Writes ``<results>/speed-<machine>.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, markdown_head, peak_memory_gb, write_results  # noqa: E402

from bids_jdam.config import PRECISIONS, SamplerConfig  # noqa: E402
from bids_jdam.device import resolve_device  # noqa: E402
from bids_jdam.data.phantom import generate_phantom_dataset  # noqa: E402
from bids_jdam.diffusion.samplers import network_evaluations  # noqa: E402
from bids_jdam.diffusion.sde import VESDE  # noqa: E402
from bids_jdam.models.demo import DEMO_MODEL_DIR  # noqa: E402
from bids_jdam.models.model_dir import load_model_dir  # noqa: E402
from bids_jdam.preprocess.threads import configure_threads  # noqa: E402
from bids_jdam.synthesis.inference import InferenceDenoiser  # noqa: E402
from bids_jdam.synthesis.volume import synthesize_volume  # noqa: E402
from bids_jdam.workflows.train import (  # noqa: E402
    evaluate_slices,
    load_phantom_truth_subjects,
    predict_slices,
    validation_slices,
)

HELD_OUT_SEED = 778
SETTINGS = [("pc", 1000), ("pc", 100), ("heun", 10), ("heun", 18), ("heun_stochastic", 18), ("heun_stochastic", 25),
            ("dpmpp_2m", 20), ("ancestral", 10), ("ancestral", 18), ("ancestral", 25), ("ancestral", 35),
            ("ancestral", 50)]
RESULTS = Path(__file__).resolve().parent / "results"


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


def whole_brain_timing(model, cfg, subject, sampler_cfg: SamplerConfig, device: torch.device,
                       planes: tuple[str, ...]) -> dict:
    """One subject's whole brain through synthesize_volume: seconds, batch size, peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = synthesize_volume(model, subject.t1, subject.brain_mask, VESDE(cfg.sde.sigma_min, cfg.sde.sigma_max),
                               sampler_cfg, image=f"sub-{subject.subject}", slice_size=cfg.grid.slice_size,
                               planes=planes, device=device, conditional=cfg.network.conditional, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row = {"sampler": sampler_cfg.name, "steps": sampler_cfg.steps, "planes": list(planes),
           "slices": result.network_evaluations // network_evaluations(sampler_cfg.name, sampler_cfg.steps,
                                                                       sampler_cfg.corrector_steps),
           "seconds": round(result.seconds, 2), "batch_size": result.batch_size,
           "peak_memory_gb": round(peak_memory_gb(device), 2)}
    print(json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--per-plane", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2,
                        help="independent samples per slice (seeds 0..S-1); scores are single-sample means (K = 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--batch-size", type=int, default=32, help="slices per sampler call")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--settings", nargs="+", metavar="NAME:STEPS",
                        help="sampler settings to measure (default: all; the first is the reference)")
    args = parser.parse_args(argv)
    command = "python benchmarks/speed.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    configure_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(threads=args.threads, device=str(device))  # before the runs: the load they start under
    settings = [(n, int(k)) for n, k in (item.split(":") for item in args.settings)] if args.settings else SETTINGS
    model_dir = DEMO_MODEL_DIR if args.model == "demo" else Path(args.model)
    network, cfg, card = load_model_dir(model_dir, device)
    model = InferenceDenoiser(network, device, args.precision, args.compile)
    bids_dir = Path(tempfile.mkdtemp(prefix="bids-jdam-speed-")) / "phantom"
    generate_phantom_dataset(bids_dir, args.subjects, HELD_OUT_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm)
    volumes = load_phantom_truth_subjects(bids_dir, cfg, [f"{i:02d}" for i in range(1, args.subjects + 1)])
    data = validation_slices(volumes, cfg, per_plane=args.per_plane)
    real_share = high_frequency_share(data.pet, data.mask)
    rows = []
    for name, steps in settings:
        predictions, scores, seconds = [], [], 0.0
        for seed in range(args.samples):
            sampler = SamplerConfig(name=name, steps=steps, corrector_steps=1 if name == "pc" else 0, seed=seed)
            start = time.perf_counter()
            predictions.append(predict_slices(model, "jdam", cfg, data.mri, data.keys, sampler, device,
                                              batch_size=args.batch_size))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - start
            scores.append(evaluate_slices(predictions[-1], data))
        rows.append({
            "sampler": name, "steps": steps,
            "network_evaluations_per_slice": network_evaluations(name, steps, sampler.corrector_steps),
            "psnr_db": float(np.mean([s["psnr_db"] for s in scores])), "ssim": float(np.mean([s["ssim"] for s in scores])),
            "psnr_db_per_sample": [s["psnr_db"] for s in scores], "ssim_per_sample": [s["ssim"] for s in scores],
            "seconds_per_slice": seconds / (len(data.keys) * args.samples),
            "sharpness_ratio": float(np.mean([high_frequency_share(p * data.mask, data.mask) for p in predictions]))
            / real_share,
            "sample_spread": sample_spread(predictions, data.mask) if args.samples > 1 else None,
        })
        print(json.dumps(rows[-1]))
    reference = rows[0]
    eligible = [r for r in rows[1:] if r["psnr_db"] >= reference["psnr_db"] - 0.3
                and r["ssim"] >= reference["ssim"] - 0.005
                and r["sharpness_ratio"] >= 0.9 * reference["sharpness_ratio"]
                and (r["sample_spread"] is None or r["sample_spread"] >= 0.9 * reference["sample_spread"])]
    chosen = min(eligible, key=lambda r: r["network_evaluations_per_slice"]) if eligible else None
    whole_brain_samplers = [replace(cfg.sampler, num_samples=1, seed=0)]
    if chosen and (chosen["sampler"], chosen["steps"]) != (cfg.sampler.name, cfg.sampler.steps):
        whole_brain_samplers.append(SamplerConfig(name=chosen["sampler"], steps=chosen["steps"], corrector_steps=0))
    whole_brain = [whole_brain_timing(model, cfg, volumes[0], sampler_cfg, device, planes)
                   for sampler_cfg in whole_brain_samplers for planes in (("axial",), ("axial", "coronal", "sagittal"))]
    report = {"command": command, "machine": machine,
              "model": str(model_dir), "precision": model.precision, "compiled": args.compile,
              "whole_brain": whole_brain,
              "model_sha256": card["sha256"]["weights.safetensors"], "held_out_seed": HELD_OUT_SEED,
              "n_slices": len(data.keys), "planes": list(cfg.train.planes), "rows": rows,
              "samples": args.samples,
              "default_rule": "fewest NFE within 0.3 dB PSNR and 0.005 SSIM of pc-1000 (means of single samples), "
                              "sharpness and sample spread >= 90% of pc-1000's",
              "chosen": chosen}
    write_results(args.results, "speed", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        *markdown_head("Samplers against PC-1000 on held-out phantom slices", report),
        f"Model: {report['model']} (sha256 {report['model_sha256'][:12]}); {report['n_slices']} slices "
        f"({', '.join(report['planes'])}), phantom seed {report['held_out_seed']}; K = 1: PSNR and SSIM are means over "
        f"{report['samples']} independent samples per slice (per sample in brackets)", "",
        "| sampler | steps | NFE/slice | PSNR dB | SSIM | sharpness (1 = real PET) | sample spread (SUVR) | s/slice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        psnrs = ", ".join(f"{v:.2f}" for v in r["psnr_db_per_sample"])
        spread = "" if r["sample_spread"] is None else f"{r['sample_spread']:.4f}"
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['network_evaluations_per_slice']} | {r['psnr_db']:.2f} "
                     f"({psnrs}) | {r['ssim']:.4f} | {r['sharpness_ratio']:.2f} | {spread} | "
                     f"{r['seconds_per_slice']:.3f} |")
    lines += ["", f"Whole brain, one subject, K = 1, network precision {report['precision']}"
              f"{', compiled' if report['compiled'] else ''}:", "",
              "| sampler | steps | planes | slices | seconds | batch | peak memory GB |", "|---|---|---|---|---|---|---|"]
    for r in report["whole_brain"]:
        lines.append(f"| {r['sampler']} | {r['steps']} | {'+'.join(r['planes'])} | {r['slices']} | {r['seconds']:.1f} "
                     f"| {r['batch_size']} | {r['peak_memory_gb']:.2f} |")
    chosen = report["chosen"]
    lines += ["", f"Rule: {report['default_rule']}.",
              f"Chosen: {chosen['sampler']} {chosen['steps']} ({chosen['network_evaluations_per_slice']} NFE)."
              if chosen else "Chosen: none of the faster settings met the rule on this run."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
