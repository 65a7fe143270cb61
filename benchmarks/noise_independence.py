"""Do participants share sampling noise? The noise of each subject's synthetic PET, compared across subjects.

    python -m benchmarks.noise_independence [--subjects 4] [--threads 2] [--results DIR] [--smoke]

Held-out phantom subjects (a fast-mode phantom's raw T1w through the app's own preprocessing, as a participant run
takes it; ``benchmarks.quality_data.load_participant_subjects``) through the demo model and the app's synthesis
entry point (``Synthesizer.synthesize``) with its default sampler, one plane, K = 2 (sample indices 0 and 1 of each
slice's noise key, as in a participant run). The difference of a subject's two samples is sampling noise alone (the
subject's own anatomy cancels). Two noise-key schemes: ``per-image``, bids-jdam's (the image's name is part of every
slice's noise key), and ``shared`` (one name for every image, as an early development version keyed the noise).
Recorded per scheme: the Pearson correlation of that noise between each pair of subjects in the voxels where both
have brain, and the SD of the subjects' mean noise over the RMS of one subject's noise: about 1/sqrt(n) when the
noise is independent, 1 when every subject carries the same pattern (a group average then removes none of it).
``--smoke``: two subjects and two sampler steps, to check the path. Writes
``<results>/noise-independence-<machine>.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from benchmarks.quality_data import load_participant_subjects
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.synthesizer import Synthesizer

HELD_OUT_SEED = 779
RESULTS = Path(__file__).resolve().parent / "results"
SCHEMES = ("per-image", "shared")


def noise_agreement(noise: list[np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Pairwise correlation of the subjects' noise maps in ``mask``, and how much of it their mean keeps."""
    values = [n[mask] for n in noise]
    correlations = [float(np.corrcoef(a, b)[0, 1]) for a, b in itertools.combinations(values, 2)]
    single_rms = float(np.sqrt(np.mean([np.mean(v**2) for v in values])))
    mean_rms = float(np.sqrt(np.mean(np.mean(values, axis=0) ** 2)))
    return {
        "correlation_mean": float(np.mean(correlations)),
        "correlation_min": min(correlations),
        "correlation_max": max(correlations),
        "group_mean_over_single": mean_rms / single_rms,
        "independent_expectation": 1 / np.sqrt(len(values)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="two subjects, two sampler steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects = 2
    if args.subjects < 2:
        parser.error("--subjects must be at least 2")
    command = command_line("benchmarks.noise_independence", argv)
    configure_threads(args.threads)
    machine = machine_info(threads=args.threads)
    synthesizer = Synthesizer.from_model_dir(DEMO_MODEL_DIR, "cpu")
    cfg = synthesizer.model.cfg
    sampler = dataclasses.replace(cfg.sampler, num_samples=2, **({"steps": 2} if args.smoke else {}))
    bids_dir = Path(tempfile.mkdtemp(prefix="bids-jdam-noise-")) / "phantom"
    generate_phantom_dataset(bids_dir, args.subjects, HELD_OUT_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm)
    subjects = [f"{i:02d}" for i in range(1, args.subjects + 1)]
    volumes = load_participant_subjects(bids_dir, cfg, subjects, bids_dir.parent / "prep", args.threads)
    common = np.logical_and.reduce([v.brain_mask for v in volumes])
    schemes = {}
    for scheme in SCHEMES:
        noise = []
        for volume in volumes:
            image = f"sub-{volume.subject}" if scheme == "per-image" else "shared"
            result = synthesizer.synthesize(volume.t1, volume.brain_mask, sampler, image=image, planes=("axial",))
            noise.append(result.samples[0] - result.samples[1])
        schemes[scheme] = noise_agreement(noise, common)
    report = {
        "command": command,
        "machine": machine,
        "model": "demo",
        "model_sha256": synthesizer.model.sha256,
        "held_out_seed": HELD_OUT_SEED,
        "phantom_version": PHANTOM_VERSION,
        "subjects": args.subjects,
        "sampler": sampler.name,
        "steps": sampler.steps,
        "planes": ["axial"],
        "voxels": int(common.sum()),
        "schemes": schemes,
    }
    write_results(args.results, "noise-independence", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [
        *markdown_head("Sampling noise across subjects", report),
        f"Demo model, {report['sampler']} with {report['steps']} steps, one plane, K = 2; noise = the difference of a "
        f"subject's two samples, compared in the {report['voxels']} voxels where all {report['subjects']} held-out "
        "phantom subjects have brain; each T1w through the app's own preprocessing.",
        "",
        "| noise keys | correlation between subjects (mean, min to max) | SD of the group mean / one subject's "
        "(independent: 1/sqrt(n)) |",
        "|---|---|---|",
    ]
    for scheme, s in report["schemes"].items():
        lines.append(
            f"| {scheme} | {s['correlation_mean']:+.3f} ({s['correlation_min']:+.3f} to "
            f"{s['correlation_max']:+.3f}) | {s['group_mean_over_single']:.3f} "
            f"({s['independent_expectation']:.3f}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
