"""The embedded demo: a held-out phantom dataset, validated, then the BIDS-App end to end with the demo model.

The demo model was trained on phantom subjects made with other seeds than the demo dataset, so the figures the
demo prints are on subjects it has not seen. It is a phantom-trained model: not for real patients.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bids_jdam.bids.validator import run_bids_validator
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.errors import InputError
from bids_jdam.io import atomic
from bids_jdam.models.demo import demo_model_config
from bids_jdam.workflows.app import run_app
from bids_jdam.workflows.run_config import RunConfig

log = logging.getLogger("bids_jdam.demo")

DEMO_SEED = 20261125  # disjoint from the seeds the demo model was trained on


def run_demo(out_dir: Path, *, subjects: int = 2, participant: bool = True) -> dict[str, Path]:
    """Build and validate the demo dataset, then run participant (a default run: one sample, so the synthetic PET
    with its predictive SD map) and group levels; return where outputs are."""
    out_dir = Path(out_dir)
    bids_dir = out_dir / "phantom_bids"
    if bids_dir.exists():
        shutil.rmtree(bids_dir)
    atomic.make_dirs(out_dir)
    cfg = demo_model_config()
    generate_phantom_dataset(bids_dir, subjects, DEMO_SEED, fast=True, grid_spacing_mm=cfg.grid.spacing_mm)
    validation = run_bids_validator(bids_dir)
    if not validation.ok:
        raise InputError(f"{bids_dir}: the demo phantom dataset failed BIDS validation: {validation.errors[:3]}")
    print(f"phantom dataset: {bids_dir} (BIDS validator: passed)")
    paths = {"bids_dir": bids_dir}
    if not participant:
        return paths
    derivatives = out_dir / "derivatives"
    rc = run_app(RunConfig(bids_dir, derivatives, "participant", work_dir=out_dir / "work"))
    rc = rc or run_app(RunConfig(bids_dir, derivatives, "group"))
    if rc:
        raise SystemExit(rc)
    paths.update(derivatives=derivatives, group_report=derivatives / "group_report.html")
    return paths
