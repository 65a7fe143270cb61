"""``bids-jdam bids_dir output_dir {participant,group}``: argument parsing only (BIDS-Apps interface).

The options become one :class:`~bids_jdam.workflows.run_config.RunConfig`; an option not given is left out, so the
run configuration's defaults (and, for the sampler settings, the model's) apply.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bids_jdam import __version__
from bids_jdam.config import PRECISIONS
from bids_jdam.workflows.run_config import ANALYSIS_LEVELS, DEVICES, PLANES, RunConfig

# argparse destination -> RunConfig field, where the names differ
RENAMED_OPTIONS = {
    "participant_label": "participant_labels",
    "session_label": "session_labels",
    "compile": "compile_network",
}


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse turns the ValueError into one usage error line)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids-jdam",
        description="Synthesize FDG-PET from T1-weighted MRI (JDAM) and write BIDS derivatives with QC reports.",
    )
    parser.add_argument("bids_dir", type=Path, help="the root of the input BIDS dataset (never written to)")
    parser.add_argument("output_dir", type=Path, help="where derivatives and reports are written")
    parser.add_argument("analysis_level", choices=ANALYSIS_LEVELS, help="participant: synthesize; group: QC summary")
    parser.add_argument("--version", action="version", version=f"bids-jdam {__version__}")
    parser.add_argument("-v", "--verbose", action="count", help="more logging (-vv for debug)")

    _input_options(parser.add_argument_group("selecting inputs"))
    _model_options(parser.add_argument_group("model and sampling"))
    _resource_options(parser.add_argument_group("resources and work directory"))
    return parser


def _input_options(sel: argparse._ArgumentGroup) -> None:
    sel.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process, with or without 'sub-' (default: all)",
    )
    sel.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        metavar="LABEL",
        help="sessions to process, with or without 'ses-' (default: all)",
    )
    sel.add_argument(
        "--bids-filter-file",
        "--bids_filter_file",
        type=Path,
        metavar="JSON",
        help='pybids entity filters per query, as in fMRIPrep: {"t1w": {...}, "pet": {...}}',
    )
    sel.add_argument(
        "--anat-suffix",
        choices=("T1w", "UNIT1"),
        help="anatomical suffix to use (default: T1w; UNIT1 for MP2RAGE, common at 7T)",
    )
    sel.add_argument(
        "--pet-rec", metavar="LABEL", help="rec- label of the FDG-PET to score against when a session holds several"
    )
    sel.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        default=None,
        help="do not run the BIDS validator on the input dataset",
    )


def _model_options(model: argparse._ArgumentGroup) -> None:
    model.add_argument(
        "--model",
        metavar="DIR|hf:ORG/NAME[@REV]|demo",
        help="a model directory made by bids-jdam-train, one on the Hugging Face Hub (fetched into "
        "its cache; HF_HUB_OFFLINE=1 uses the cache only), or 'demo' to force the phantom-trained "
        "demo model (default: the demo model, only on phantom datasets)",
    )
    model.add_argument(
        "--device",
        choices=DEVICES,
        help="auto (the default) uses a GPU when one is visible and falls back to CPU with a log line",
    )
    model.add_argument("--sampler", help="sampler name (default: the model's default)")
    model.add_argument("--steps", type=at_least(2), help="sampler steps (default: the model's default)")
    model.add_argument(
        "--num-samples",
        type=at_least(1),
        help="posterior samples K (default: the model's default); K > 1 also writes a "
        "standard-deviation (uncertainty) map",
    )
    model.add_argument(
        "--planes",
        nargs="+",
        choices=PLANES,
        help="sampling planes (default: axial); several are fused (mean), which removes inter-slice "
        "stripes, and give a view-disagreement map (desc-jdamviewstd)",
    )
    model.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="network precision while sampling (auto: bf16 on a CUDA GPU, fp32 on CPU)",
    )
    model.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the network (pays a one-off compilation; helps long GPU runs)",
    )
    model.add_argument(
        "--seed",
        type=int,
        help="random seed (default: the model's default); each image draws its own noise from it "
        "(results do not depend on batch size)",
    )


def _resource_options(perf: argparse._ArgumentGroup) -> None:
    perf.add_argument("-w", "--work-dir", type=Path, help="cached intermediate results (reused between runs)")
    perf.add_argument(
        "--nprocs", "--nthreads", type=at_least(1), help="participants processed in parallel (default: 1)"
    )
    perf.add_argument(
        "--omp-nthreads", type=at_least(1), help="threads per process for ANTs/ITK, OpenMP and torch (default: 2)"
    )
    perf.add_argument("--mem-gb", type=positive_float, help="memory limit in GB (bounds the sampling batch size)")
    perf.add_argument(
        "--stop-on-first-crash", action="store_true", default=None, help="stop at the first failed participant"
    )


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration of parsed arguments: only the options given (argparse leaves the others None)."""
    given = {
        RENAMED_OPTIONS.get(name, name): tuple(value) if isinstance(value, list) else value
        for name, value in vars(args).items()
        if value is not None
    }
    return RunConfig(**given)


def configure_logging(level: int, log_format: str) -> None:
    """Log to stderr at ``level``; matplotlib stays at warnings (e.g. its font-cache notice on a first run)."""
    logging.basicConfig(level=level, format=log_format, stream=sys.stderr)
    logging.getLogger("matplotlib").setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    config = run_config(build_parser().parse_args(argv))
    configure_logging(
        logging.WARNING - 10 * min(config.verbose + 1, 2), "%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    from bids_jdam.workflows.app import run_app

    return run_app(config)


if __name__ == "__main__":
    raise SystemExit(main())
