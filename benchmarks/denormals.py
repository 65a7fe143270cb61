"""Subnormal floats on this CPU: what they cost, what bids-jdam's flushing saves, and that it changes no mask.

    python -m benchmarks.denormals [--threads 2] [--repeats 3] [--results DIR] [--smoke]

1. A convolution (8 -> 8 channels, 3x3x3, on 8x48x48x48) on normal inputs, on subnormal inputs as torch runs
   them by default, and on subnormal inputs through ``bids_jdam.runtime.denormals.run_without_subnormals``
   (the setting the app's CPU computations run under): CPU seconds of each and the slowdown ratios against the
   normal input.
2. HD-BET (the app's ``extract_brain``, N4-corrected input as in the pipeline) on a fast-mode phantom T1w and on the
   real Colin27 scan (``../shared/data``, when present), with and without flushing, each in a fresh process pinned to
   ``--threads`` cores: wall and CPU seconds, mask voxels and the Dice between the two masks (target >= 0.999).
3. Synthesis with the demo model through the app's entry point (``Synthesizer.synthesize``; its default sampler,
   one plane, K = 2, fp32) of a held-out phantom's template-space T1w, flushed (as the app runs it) and not (the
   same call with ``synthesize_volume``'s flushing bypassed): the largest voxelwise difference (SUVR) and both
   volumes' PSNR against the phantom's PET.

``--smoke``: one repeat, no HD-BET (unflushed it takes minutes on an Intel Xeon), two sampler steps, to check the
path. Writes
``<results>/denormals-<machine>.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.config import BrainExtractionConfig
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.preprocess.bias import n4_correct

REPO = Path(__file__).resolve().parents[1]
COLIN27 = REPO / ".." / "shared" / "data" / "colin27_T1w_2mm.nii"
DICE_TARGET = 0.999
SYNTHESIS_SEED = 777  # the synthesis benchmark's held-out phantom seed


def convolution_seconds(threads: int, repeats: int) -> dict[str, float]:
    """CPU seconds of a fixed 3D convolution on normal and subnormal inputs, unflushed and under the app's setting."""
    import torch

    from bids_jdam.runtime.denormals import run_without_subnormals

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 8, 3, padding=1)
    normal = torch.rand(1, 8, 48, 48, 48)
    subnormal = normal * 1e-39

    def timed(x: torch.Tensor) -> float:
        with torch.no_grad():
            conv(x)  # warm-up
            start = time.process_time()
            for _ in range(repeats):
                conv(x)
            return (time.process_time() - start) / repeats

    seconds = {
        "normal": timed(normal),
        "subnormal_default": timed(subnormal),
        "subnormal_flushed": run_without_subnormals(timed, subnormal),
    }
    seconds["slowdown_default"] = seconds["subnormal_default"] / seconds["normal"]
    seconds["slowdown_flushed"] = seconds["subnormal_flushed"] / seconds["normal"]
    return {k: round(v, 4) for k, v in seconds.items()}


def hd_bet_run(t1w_n4: Path, out_dir: Path, threads: int, flush: bool) -> dict[str, object]:
    """One ``extract_brain`` call in this (fresh) process, with the app's flushing or with it bypassed."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    from bids_jdam.preprocess import brain_extraction
    from bids_jdam.runtime.threads import configure_threads

    configure_threads(threads)
    if not flush:
        brain_extraction.run_without_subnormals = lambda fn, *args: fn(*args)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = out_dir / f"mask-{'flushed' if flush else 'default'}.nii.gz"
    wall, cpu = time.perf_counter(), time.process_time()
    info = brain_extraction.extract_brain(t1w_n4, mask, out_dir / "brain.nii.gz", BrainExtractionConfig())
    return {
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "mask": str(mask),
        "subnormals_flushed": info["subnormals_flushed"],
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def compare_masks(flushed: Path, default: Path) -> dict[str, float]:
    """Dice and voxel counts of two binary masks."""
    a = np.asarray(nib.load(str(flushed)).dataobj) > 0
    b = np.asarray(nib.load(str(default)).dataobj) > 0
    return {
        "dice": round(float(2 * (a & b).sum() / (a.sum() + b.sum())), 6),
        "voxels_flushed": int(a.sum()),
        "voxels_default": int(b.sum()),
        "voxels_differing": int((a ^ b).sum()),
    }


def hd_bet_comparison(name: str, t1w: Path, work: Path, threads: int) -> dict[str, object]:
    """HD-BET on ``t1w`` (after N4) flushed and not, each in a fresh process; their costs and mask agreement."""
    n4 = work / name / "t1w_n4.nii.gz"
    n4.parent.mkdir(parents=True, exist_ok=True)
    n4_correct(t1w, n4)
    shape = nib.load(str(n4)).shape
    runs = {}
    for flush in (True, False):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            runs["flushed" if flush else "default"] = pool.submit(hd_bet_run, n4, work / name, threads, flush).result()
        print(name, "flushed" if flush else "default", runs["flushed" if flush else "default"], flush=True)
    comparison = compare_masks(Path(runs["flushed"]["mask"]), Path(runs["default"]["mask"]))
    return {
        "input": t1w.name,
        "shape": list(shape),
        **runs,
        **comparison,
        "cpu_speedup": round(runs["default"]["cpu_seconds"] / max(runs["flushed"]["cpu_seconds"], 1e-9), 1),
        "meets_dice_target": comparison["dice"] >= DICE_TARGET,
    }


def hd_bet_comparisons(work: Path, threads: int) -> dict[str, dict[str, object]]:
    """HD-BET flushed and not on a fast-mode 3 T phantom T1w and, when present, Colin27."""
    phantom = generate_phantom_dataset(work / "phantom", 1, 0, fast=True, field_strength=3)
    subjects = {"phantom-fast-3T": phantom / "sub-01" / "anat" / "sub-01_T1w.nii.gz"}
    if COLIN27.exists():
        subjects["colin27-2mm"] = COLIN27.resolve()
    return {name: hd_bet_comparison(name, t1w, work, threads) for name, t1w in subjects.items()}


@contextmanager
def synthesis_keeping_subnormals() -> Iterator[None]:
    """The app's synthesis entry point with ``synthesize_volume``'s flushing bypassed (its undecorated function)."""
    from bids_jdam.synthesis import synthesizer

    flushing = synthesizer.synthesize_volume
    synthesizer.synthesize_volume = flushing.__wrapped__
    try:
        yield
    finally:
        synthesizer.synthesize_volume = flushing


def synthesis_comparison(threads: int, work: Path, steps: int | None = None) -> dict[str, object]:
    """The demo model's synthetic PET of one held-out phantom subject with and without flushing subnormals."""
    import torch

    from bids_jdam.evaluate.metrics import image_quality
    from bids_jdam.models.demo import DEMO_MODEL_DIR
    from bids_jdam.synthesis.synthesizer import Synthesizer
    from bids_jdam.workflows.training_data import load_phantom_truth_subjects

    torch.set_num_threads(threads)
    synthesizer = Synthesizer.from_model_dir(DEMO_MODEL_DIR, "cpu", precision="fp32")
    cfg = synthesizer.model.cfg
    bids = generate_phantom_dataset(
        work / "held-out", 1, SYNTHESIS_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm
    )
    subject = next(load_phantom_truth_subjects(bids, cfg, ["01"]))
    sampler = dataclasses.replace(cfg.sampler, num_samples=2, seed=0, steps=steps or cfg.sampler.steps)
    runs = {}
    for name, setting in (("flushed", nullcontext), ("default", synthesis_keeping_subnormals)):
        start = time.process_time()
        with setting():
            result = synthesizer.synthesize(subject.t1, subject.brain_mask, sampler, image="sub-01", planes=("axial",))
        quality = image_quality(result.mean, subject.pet, subject.brain_mask)
        runs[name] = {
            "cpu_seconds": round(time.process_time() - start, 2),
            "psnr_db": round(quality["psnr_db"], 4),
            "mean": result.mean,
        }
    difference = np.abs(runs["flushed"].pop("mean") - runs["default"].pop("mean"))
    return {
        "sampler": f"{sampler.name}-{sampler.steps}",
        "num_samples": 2,
        "planes": ["axial"],
        **runs,
        "max_abs_difference_suvr": float(difference.max()),
        "voxels_differing": int((difference > 0).sum()),
        "brain_voxels": int(subject.brain_mask.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--smoke", action="store_true", help="one repeat, no HD-BET, 2 sampler steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    report: dict[str, object] = {
        "command": command_line("benchmarks.denormals", argv),
        "machine": machine_info(threads=args.threads),
        "convolution_cpu_seconds": convolution_seconds(args.threads, args.repeats),
    }
    print(report["convolution_cpu_seconds"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["hd_bet"] = {} if args.smoke else hd_bet_comparisons(Path(tmp), args.threads)
        report["synthesis"] = synthesis_comparison(args.threads, Path(tmp), steps=2 if args.smoke else None)
        print(report["synthesis"], flush=True)
    write_results(args.results, "denormals", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    conv = report["convolution_cpu_seconds"]
    lines = markdown_head("Subnormal floats: cost and bids-jdam's flushing", report) + [
        "",
        "| convolution input | CPU s per call | slowdown vs normal input |",
        "|---|---|---|",
        f"| normal | {conv['normal']} | 1 |",
        f"| subnormal, torch's default | {conv['subnormal_default']} | {conv['slowdown_default']:.1f}x |",
        f"| subnormal, the app's setting (flushed) | {conv['subnormal_flushed']} | {conv['slowdown_flushed']:.1f}x |",
        "",
        "| HD-BET input | shape | flushed wall / CPU s | default wall / CPU s | CPU speed-up | Dice | voxels "
        "differing | Dice >= 0.999 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["hd_bet"].items():
        lines.append(
            f"| {name} | {'x'.join(map(str, r['shape']))} | {r['flushed']['wall_seconds']} / "
            f"{r['flushed']['cpu_seconds']} | {r['default']['wall_seconds']} / {r['default']['cpu_seconds']} "
            f"| {r['cpu_speedup']}x | {r['dice']} | {r['voxels_differing']} | {r['meets_dice_target']} |"
        )
    syn = report["synthesis"]
    lines += [
        "",
        f"Synthesis, demo model, {syn['sampler']}, K = {syn['num_samples']}, one plane, one held-out phantom: "
        f"PSNR {syn['flushed']['psnr_db']} dB flushed, {syn['default']['psnr_db']} dB default; "
        f"{syn['voxels_differing']} of {syn['brain_voxels']} brain voxels differ, by at most "
        f"{syn['max_abs_difference_suvr']:.3g} SUVR; CPU {syn['flushed']['cpu_seconds']} s flushed, "
        f"{syn['default']['cpu_seconds']} s default.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
