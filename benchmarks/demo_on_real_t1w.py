"""Does the demo's synthetic PET from a real T1w look like real FDG? Its regional pattern against real norms.

    python -m benchmarks.demo_on_real_t1w [--model demo|DIR] [--t1w PATH] [--threads 2] [--results DIR]

The real T1w (default: Colin27 from ``../shared/data``) goes through the app's path: the app's preprocessing
(``preprocess_t1w``: N4, HD-BET, SyN to the template) and synthesis (``Synthesizer``, the model's default sampler,
one plane, K = 1: the default run). Its synthetic PET is then measured as the phantom realism benchmark measures
the phantom: each AAL3 region group's mean inside the template's gray-matter support over the cerebellar cortex's,
against the real healthy norms (``bids_jdam/data/phantom/fdg_norms.tsv``, groups from the Shokri-Kojori et al.
2019 average). Writes ``<results>/demo-real-t1w-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from benchmarks.phantom_realism import against_norms
from bids_jdam.data.phantom.fdg_norms import region_groups
from bids_jdam.data.phantom.partial_volume import gray_matter_support, measured_pattern
from bids_jdam.data.template import load_template
from bids_jdam.preprocess.pipeline import preprocess_t1w
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.loaded_model import load_model
from bids_jdam.synthesis.synthesizer import Synthesizer

REPO = Path(__file__).resolve().parents[1]
COLIN27 = REPO / ".." / "shared" / "data" / "colin27_T1w_2mm.nii"
RESULTS = REPO / "benchmarks" / "results"
GOAL_PEARSON = 0.8


def regional_pattern(model_arg: str, t1w: Path, work: Path, threads: int) -> tuple[dict[str, float], dict]:
    """The synthetic PET's regional pattern (over the cerebellar cortex) and the model's identity."""
    model = load_model(model_arg, work, "cpu")
    cfg = model.cfg
    prep = preprocess_t1w(t1w, work / "preprocessing", cfg, subject_label="real", nthreads=threads)
    t1 = np.asarray(nib.load(str(prep.t1w_model)).get_fdata(dtype=np.float32))
    mask = np.asarray(nib.load(str(prep.brain_mask_model)).dataobj) > 0
    result = Synthesizer(model, "cpu").synthesize(t1, mask, cfg.sampler, image="real-t1w", planes=("axial",))
    template = load_template(cfg.grid.spacing_mm)
    support = gray_matter_support(template.gm, template.wm, cfg.grid.spacing_mm) & mask
    pattern = measured_pattern(result.mean, support, cfg.grid.spacing_mm)
    return pattern, {"name": model.name, "sha256": model.sha256, "grid_mm": cfg.grid.spacing_mm}


def markdown(report: dict) -> str:
    scores = report["against_norms"]
    lines = markdown_head("The demo model on a real T1w: regional pattern against real FDG norms", report) + [
        "",
        f"Model {report['model']['name']} (sha256 {report['model']['sha256'][:12]}), input {report['t1w']}, the "
        f"app's preprocessing and default run. Goal: Pearson r >= {GOAL_PEARSON} across the region groups.",
        "",
        f"Pearson r = {scores['pearson']:.3f}, Spearman {scores['spearman']:.3f}, largest difference "
        f"{scores['max_abs_difference']:.3f} (units of the cerebellar cortex); goal met: {report['goal_met']}.",
        "",
        "| group | norm | synthetic |",
        "|---|---|---|",
    ]
    for name, group in region_groups().items():
        lines.append(f"| {name} | {group.uptake:.2f} ({group.source}) | {report['pattern'][name]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--t1w", type=Path, default=COLIN27)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pattern, model = regional_pattern(args.model, args.t1w.resolve(), Path(tmp), args.threads)
    scores = against_norms(pattern)
    report = {
        "command": command_line("benchmarks.demo_on_real_t1w", argv),
        "machine": machine_info(threads=args.threads),
        "model": model,
        "t1w": args.t1w.name,
        "pattern": pattern,
        "against_norms": scores,
        "goal_met": scores["pearson"] >= GOAL_PEARSON,
    }
    write_results(args.results, "demo-real-t1w", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
