"""Cost of the preprocessing per subject: seconds per step and peak memory, on a fixed number of cores.

Subjects: a 1 mm 3 T-like and a 0.7 mm 7 T-like phantom T1w with their FDG-PET (T1w and PET steps, as a participant
run with PET takes them), a fast-mode (3 mm) one, generated here with the phantom API, and the real Colin27 T1w
from ``../shared/data`` when present. PET co-registration is to cost no more than the T1w registration (in CPU
seconds). Each subject runs in a fresh process pinned to ``--threads`` cores, so its peak resident memory is its
own. Wall seconds depend on what else the machine runs; CPU seconds (all threads) are recorded next to them, with
the load average, so numbers from a shared machine can be read fairly. The target: under 45 s wall per subject on
2 cores (without the template step, which a run does once for all subjects).
Writes ``preprocess-<machine>.{json,md}`` to ``--out`` (the machine's name includes the CPU family).

    python -m benchmarks.preprocess --threads 2
    python -m benchmarks.preprocess --smoke --out /tmp/prep   # the fast-mode phantom only, to check the path
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.config import JDAMConfig
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.preprocess.pipeline import preprocess_pair, preprocess_t1w

REPO = Path(__file__).resolve().parents[1]
COLIN27 = REPO / ".." / "shared" / "data" / "colin27_T1w_2mm.nii"
TARGET = {"seconds": 45.0, "peak_memory_gb": 4.0}


def run_subject(t1w: Path, pet: Path | None, work_dir: Path, threads: int) -> dict:
    """Preprocess one T1w (and its PET) in this (fresh) process and report its step times and peak memory."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[:threads])
    start = time.perf_counter()
    label = t1w.name.split("_")[0]
    prep = (
        preprocess_pair(t1w, pet, work_dir, JDAMConfig(), subject_label=label, nthreads=threads)
        if pet
        else preprocess_t1w(t1w, work_dir, JDAMConfig(), subject_label=label, nthreads=threads)
    )
    total = time.perf_counter() - start
    return {
        "input": str(t1w),
        "voxel_sizes_mm": prep.voxel_sizes_mm,
        "shape": prep.shape,
        "wall_seconds_per_step": {k: round(v, 2) for k, v in prep.timings_s.items()},
        "cpu_seconds_per_step": {k: round(v, 2) for k, v in prep.cpu_seconds.items()},
        "wall_seconds_total": round(total, 2),
        "wall_seconds_without_template": round(total - prep.timings_s.get("template", 0.0), 2),
        "cpu_seconds_total": round(sum(prep.cpu_seconds.values()), 2),
        "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        "hd_bet": {"version": prep.hd_bet_version, "mode": prep.hd_bet_mode},
        "cores": sorted(os.sched_getaffinity(0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="only the fast-mode phantom T1w")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.preprocess", argv)
    machine = machine_info(threads=args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        fast = generate_phantom_dataset(work / "phantom-fast", 1, 0, fast=True, field_strength=3)
        subjects = {"phantom-fast-3mm-3T": (fast / "sub-01" / "anat" / "sub-01_T1w.nii.gz", None)}
        if not args.smoke:
            for field, name in ((3, "phantom-1mm-3T+PET"), (7, "phantom-0.7mm-7T+PET")):
                phantom = generate_phantom_dataset(work / name, 1, 0, field_strength=field, grid_spacing_mm=2.0)
                subjects[name] = (
                    phantom / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
                    next((phantom / "sub-01" / "pet").glob("*_pet.nii.gz")),
                )
            if COLIN27.exists():
                subjects["colin27-2mm"] = (COLIN27.resolve(), None)
        results = {}
        for name, (t1w, pet) in subjects.items():
            load_before = os.getloadavg()
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                results[name] = pool.submit(run_subject, t1w, pet, work / name, args.threads).result()
            results[name]["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
            results[name]["meets_target"] = (
                results[name]["wall_seconds_without_template"] < TARGET["seconds"]
                and results[name]["peak_memory_gb"] < TARGET["peak_memory_gb"]
            )
            cpu = results[name]["cpu_seconds_per_step"]  # CPU seconds: robust to what else the machine runs
            if "pet_coregistration" in cpu:
                results[name]["pet_coregistration_within_t1w_registration"] = (
                    cpu["pet_coregistration"] <= cpu["registration"]
                )
            print(name, json.dumps(results[name], indent=1), flush=True)

    report = {
        "command": command,
        "machine": machine,
        "target": TARGET,
        "config": "JDAMConfig() (2 mm grid)",
        "subjects": results,
    }
    write_results(args.out, "preprocess", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    """Per subject: wall / CPU seconds of every step, the total without the template, peak memory, the target."""
    steps = list(dict.fromkeys(s for r in report["subjects"].values() for s in r["wall_seconds_per_step"]))
    lines = markdown_head("Preprocessing cost per subject", report) + [
        "",
        f"Target: under {report['target']['seconds']:g} s wall per subject without the template step, "
        f"under {report['target']['peak_memory_gb']:g} GB; PET co-registration no slower than the T1w registration. "
        "Cells: wall / CPU seconds (all threads); subjects with +PET run the PET steps too.",
        "",
        "| subject | shape | " + " | ".join(steps) + " | total without template | peak GB | meets target |",
        "|---|---|" + "---|" * (len(steps) + 3),
    ]
    for name, r in report["subjects"].items():
        cells = [
            f"{r['wall_seconds_per_step'][s]} / {r['cpu_seconds_per_step'][s]}"
            if s in r["wall_seconds_per_step"]
            else "-"
            for s in steps
        ]
        lines.append(
            f"| {name} | {'x'.join(map(str, r['shape']))} | "
            + " | ".join(cells)
            + f" | {r['wall_seconds_without_template']} | {r['peak_memory_gb']} | {r['meets_target']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
