"""Every option of a ``bids-jdam`` run, typed: built once by the CLI (or the demo), read by the workflows.

The defaults live here and nowhere else; the CLI passes only the options it was given. ``None`` for the sampler,
its steps, the number of samples and the seed keeps the model's value (its ``config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ANALYSIS_LEVELS = ("participant", "group")
PLANES = ("axial", "coronal", "sagittal")
DEFAULT_PLANES = ("axial",)  # one plane: what the spread and regional calibrations are fitted for
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RunConfig:
    """One ``bids-jdam`` run (BIDS-Apps interface): inputs, model and sampling, resources."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str  # one of ANALYSIS_LEVELS
    # selecting inputs
    participant_labels: tuple[str, ...] | None = None  # with or without "sub-"; None = all
    session_labels: tuple[str, ...] | None = None  # with or without "ses-"; None = all
    bids_filter_file: Path | None = None
    anat_suffix: str = "T1w"  # one of bids_jdam.bids.query.ANAT_SUFFIXES
    pet_rec: str | None = None  # rec- label of the FDG-PET to score against
    skip_bids_validation: bool = False
    # model and sampling
    model: str | None = None  # a model directory, "hf:ORG/NAME[@REVISION]", "demo", or None (the model rule)
    device: str = "auto"  # one of DEVICES
    sampler: str | None = None
    steps: int | None = None
    num_samples: int | None = None
    seed: int | None = None
    planes: tuple[str, ...] = DEFAULT_PLANES
    precision: str = "auto"  # one of bids_jdam.config.PRECISIONS
    compile_network: bool = False
    # resources and work directory
    work_dir: Path | None = None  # None = OUTPUT_DIR/.work
    nprocs: int = 1
    omp_nthreads: int = 2
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    verbose: int = 0

    @property
    def work_directory(self) -> Path:
        """The cache of intermediate results: ``work_dir``, else ``OUTPUT_DIR/.work``."""
        return self.work_dir or self.output_dir / ".work"
