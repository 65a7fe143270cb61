"""The BIDS-App run: resolve inputs, the model and the device, then the participant or group level.

Errors in the input (not a BIDS dataset, unknown participants, a bad filter file, a tampered model, bad options)
end the run with one line and exit code 1 before any image is preprocessed; a failing image is logged and the
others go on (exit code 1 at the end). The whole run is inside the write gate (:mod:`bids_jdam.io.write_gate`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from bids_jdam import __version__
from bids_jdam.bids.outputs import start_derivative_dataset
from bids_jdam.bids.query import (
    AnatInput,
    dataset_identity,
    find_anatomicals,
    load_filters,
    load_layout,
    normalize_labels,
    participants_with_broken_sidecars,
)
from bids_jdam.config import SamplerConfig
from bids_jdam.errors import InputError, StepError, failure_line, one_line
from bids_jdam.io import atomic, write_gate
from bids_jdam.runtime.device import resolve_device
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.loaded_model import LoadedModel, load_model
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows.participant import (
    ParticipantJob,
    ParticipantOutcome,
    process_participant,
    real_pet_lookup,
    replace_sampler,
)
from bids_jdam.workflows.run_config import RunConfig

log = logging.getLogger("bids_jdam")

EXIT_OK, EXIT_FAILED = 0, 1


def run_app(config: RunConfig) -> int:
    """Entry point behind the CLI and the demo; returns the process exit code. Every error ends in one line."""
    try:
        with write_gate.protecting(config.bids_dir):
            _check_paths(config)
            if config.analysis_level == "group":
                return _group(config)
            return _participant(config)
    except (InputError, StepError) as error:
        print(f"bids-jdam: error: {one_line(error)}", file=sys.stderr)
    except OSError as error:  # a read-only or full output disk, a permission problem
        where = f"{error.filename}: " if error.filename else ""
        print(f"bids-jdam: error: {where}{error.strerror or one_line(error)}", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - a bug must still end in one line; -vv logs the traceback
        log.debug("unexpected error:\n%s", traceback.format_exc())
        print(
            f"bids-jdam: error: unexpected {type(error).__name__}: {one_line(error)} (-vv logs the traceback)",
            file=sys.stderr,
        )
    return EXIT_FAILED


def _check_paths(config: RunConfig) -> None:
    """Output and work directory (default ``OUTPUT_DIR/.work``) must not resolve into the input, symlinks followed."""
    write_gate.check(config.output_dir, "output_dir")
    write_gate.check(config.work_directory, "work directory")


def _group(config: RunConfig) -> int:
    from bids_jdam.reports.group import run_group_level

    if not (config.output_dir / "dataset_description.json").is_file():
        raise InputError(f"{config.output_dir}: no bids-jdam derivatives here; run the participant level first")
    outputs = run_group_level(config.output_dir, config.bids_dir)
    print(f"group table: {outputs.table}\ngroup report: {outputs.report}")
    for line in outputs.unreadable:
        print(f"bids-jdam: {line}; its participant is left out of the group table", file=sys.stderr)
    return EXIT_FAILED if outputs.unreadable else EXIT_OK


def _participant(config: RunConfig) -> int:
    configure_threads(config.omp_nthreads)
    layout = load_layout(config.bids_dir, validate=not config.skip_bids_validation)
    filters = load_filters(config.bids_filter_file) if config.bids_filter_file else {}
    selection = find_anatomicals(
        layout,
        participants=normalize_labels(config.participant_labels),
        sessions=normalize_labels(config.session_labels, prefix="ses"),
        suffix=config.anat_suffix,
        filters=filters.get("t1w"),
    )
    broken = participants_with_broken_sidecars(config.bids_dir)
    inputs = [anat for anat in selection.inputs if anat.subject not in broken]
    refused = {f"sub-{s}": "no anatomical image matches the selection" for s in selection.missing}
    refused |= {f"sub-{anat.subject}": broken[anat.subject] for anat in selection.inputs if anat.subject in broken}
    device = resolve_device(config.device)
    model = load_model(config.model, config.bids_dir, device)
    sampler = replace_sampler(
        model.cfg.sampler, name=config.sampler, steps=config.steps, num_samples=config.num_samples, seed=config.seed
    )
    real_pets = real_pet_lookup(layout, inputs, config.pet_rec, filters.get("pet"))

    _check_writable(config.output_dir)
    start_derivative_dataset(config.output_dir, source_dir=config.bids_dir, version=__version__)
    jobs = _jobs(config, inputs, real_pets, sampler, device)
    outcomes = _run_jobs(jobs, model, device, config)
    return _summarize(outcomes, refused, len(selection.inputs), config.output_dir)


def _jobs(
    config: RunConfig,
    inputs: list[AnatInput],
    real_pets: dict[str, Path | None],
    sampler: SamplerConfig,
    device: torch.device,
) -> list[ParticipantJob]:
    """One job per participant, with all of its selected images."""
    by_subject: dict[str, list[AnatInput]] = {}
    for anat in inputs:
        by_subject.setdefault(anat.subject, []).append(anat)
    work_dir, identity = config.work_directory.resolve(), dataset_identity(config.bids_dir)
    return [
        ParticipantJob(
            subject=subject,
            inputs=images,
            real_pets={str(a.path): real_pets[str(a.path)] for a in images},
            output_dir=config.output_dir,
            work_dir=work_dir,
            sampler=sampler,
            planes=config.planes,
            device=str(device),
            omp_nthreads=config.omp_nthreads,
            batch_size=_batch_size(config.mem_gb, device),
            dataset_identity=identity,
            stop_on_first_crash=config.stop_on_first_crash,
        )
        for subject, images in by_subject.items()
    ]


def _summarize(outcomes: list[ParticipantOutcome], refused: dict[str, str], n_images: int, output_dir: Path) -> int:
    """One line of counts (images and participants) on stdout, one line per failed image on stderr; ``refused``
    names the participants not run (no image selected, a broken sidecar) with the reason."""
    failed = dict(refused)
    for outcome in outcomes:
        failed.update(outcome.failed)
    succeeded = sum(len(o.succeeded) for o in outcomes)
    failed_qc = [stem for o in outcomes for stem in o.failed_qc]
    complete = sum(1 for o in outcomes if o.succeeded and not o.failed)
    print(
        f"bids-jdam: {complete} of {len(outcomes) + len(refused)} participants succeeded, {succeeded} of {n_images} "
        f"images ({len(failed_qc)} of them failed quality control); outputs in {output_dir}"
    )
    for name, error in sorted(failed.items()):
        print(f"bids-jdam: {name} failed: {error}", file=sys.stderr)
    for stem in failed_qc:
        print(
            f"bids-jdam: {stem} failed quality control (status failed-qc in its metrics and sidecars)", file=sys.stderr
        )
    return EXIT_FAILED if failed or failed_qc else EXIT_OK


def _run_jobs(
    jobs: list[ParticipantJob], model: LoadedModel, device: torch.device, config: RunConfig
) -> list[ParticipantOutcome]:
    """Run participants one by one with one synthesizer (or in worker processes with --nprocs > 1, each loading
    the very model loaded here: a Hub model pinned to the commit fetched)."""
    if config.nprocs > 1 and len(jobs) > 1:
        if model.hub_snapshot is not None:
            config = dataclasses.replace(config, model=model.hub_snapshot.pinned)
        with ProcessPoolExecutor(max_workers=config.nprocs) as pool:
            futures = [pool.submit(_worker, job, config) for job in jobs]
            return [future.result() for future in futures]
    synthesizer = Synthesizer(model, device, config.precision, config.compile_network)
    outcomes = []
    for job in jobs:
        outcomes.append(_guarded(job, synthesizer))
        if config.stop_on_first_crash and outcomes[-1].failed:
            break
    return outcomes


def _worker(job: ParticipantJob, config: RunConfig) -> ParticipantOutcome:
    configure_threads(job.omp_nthreads)
    device = torch.device(job.device)
    with write_gate.protecting(config.bids_dir):
        model = load_model(config.model, config.bids_dir, device)
        return _guarded(job, Synthesizer(model, device, config.precision, config.compile_network))


def _guarded(job: ParticipantJob, synthesizer: Synthesizer) -> ParticipantOutcome:
    """Process one participant; a failure of the whole participant (its lock, its report) becomes one line."""
    try:
        outcome = process_participant(job, synthesizer)
        log.info("sub-%s: %d files written", job.subject, len(outcome.published))
        return outcome
    except Exception as error:  # noqa: BLE001 - one participant's failure must not stop the others
        log.debug("sub-%s failed:\n%s", job.subject, traceback.format_exc())
        return ParticipantOutcome(subject=job.subject, failed={f"sub-{job.subject}": failure_line(error)})


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
