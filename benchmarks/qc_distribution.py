"""Measure the input quality gate's numbers on phantom subjects and on broken inputs (docs/quality_gates.md).

    python -m benchmarks.qc_distribution OUT_DIR [--subjects 8] [--seed 1] [--t1w NAME=PATH ...] [--smoke]

Each T1w goes through the app's preprocessing (the demo model's configuration, as its model directory gives it)
and the gate's measures and rule (:mod:`bids_jdam.preprocess.quality_gate`, as the participant workflow calls
them); prints and writes ``OUT_DIR/qc_distribution.json``. ``--smoke``: one phantom subject and one broken input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.machine import write_text_atomic
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.data.template import load_template
from bids_jdam.methods.model_dir import load_model_dir
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.preprocess import quality_gate
from bids_jdam.preprocess.pipeline import preprocess_t1w


def broken_inputs(t1w: Path, folder: Path) -> dict[str, Path]:
    """Inputs the gate must catch, made from one phantom T1w: noise, shuffled voxels, wrong voxel sizes."""
    img = nib.load(str(t1w))
    data = np.asarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(0)
    made = {
        "uniform-noise": rng.uniform(0, float(data.max()), data.shape).astype(np.float32),
        "shuffled-voxels": rng.permutation(data.ravel()).reshape(data.shape),
    }
    paths = {}
    for name, values in made.items():
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(values, img.affine), str(paths[name]))
    for name, factor in (("voxels-3x-too-small", 1 / 3), ("voxels-2x-too-large", 2.0)):
        affine = img.affine.copy()
        affine[:3, :3] *= factor
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(paths[name]))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--t1w", nargs="*", default=[], metavar="NAME=PATH", help="more T1w images (e.g. Colin27)")
    parser.add_argument("--smoke", action="store_true", help="one phantom subject and one broken input")
    args = parser.parse_args(argv)
    cfg = load_model_dir(DEMO_MODEL_DIR)[1]
    bids = generate_phantom_dataset(
        args.out / "bids",
        1 if args.smoke else args.subjects,
        args.seed,
        fast=True,
        grid_spacing_mm=cfg.grid.spacing_mm,
        field_strength="mix",
    )
    inputs = {p.name.split("_")[0]: p for p in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz"))}
    (args.out / "broken").mkdir(parents=True, exist_ok=True)
    broken = broken_inputs(inputs["sub-01"], args.out / "broken")
    inputs.update({"uniform-noise": broken["uniform-noise"]} if args.smoke else broken)
    inputs.update(dict((name, Path(path)) for name, path in (item.split("=", 1) for item in args.t1w)))
    template = load_template(cfg.grid.spacing_mm)
    results = {}
    for name, path in inputs.items():
        try:
            prep = preprocess_t1w(path, args.out / "work" / name, cfg, subject_label=name, nthreads=1)
        except Exception as error:  # noqa: BLE001 - a broken input may fail preprocessing outright
            results[name] = {"error": str(error).splitlines()[0]}
            print(name, "error:", results[name]["error"], flush=True)
            continue
        measures = quality_gate.measure(
            np.asarray(nib.load(str(prep.t1w_model)).dataobj, dtype=np.float32),
            np.asarray(nib.load(str(prep.brain_mask_model)).dataobj) > 0.5,
            template.t1,
            template.brain_mask,
            nib.load(str(prep.brain_mask_native)),
        )
        results[name] = {**measures.__dict__, "failures": quality_gate.failures(measures)}
        print(name, results[name], flush=True)
    write_text_atomic(args.out / "qc_distribution.json", json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
