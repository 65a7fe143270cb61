"""Which images to process: participant/session labels, filter files and pybids queries on the input dataset.

The input dataset is never written to (it may be a read-only mount in a container): pybids keeps its index in
memory. Outputs are named by subject, session and run only (a PET derivative name has no acq-, ce- or rec-
entity), so two anatomical images of one session that differ only in such an entity are refused with a hint to
pick one through the filter file instead of silently overwriting each other's outputs.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids import BIDSLayout
from bids.layout import BIDSLayoutIndexer, Query
from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

from bids_jdam.errors import InputError

LOGGER = logging.getLogger(__name__)

NIFTI_EXTENSIONS = [".nii", ".nii.gz"]
FILTER_QUERIES = ("t1w", "pet")
ANAT_SUFFIXES = ("T1w", "UNIT1")


def normalize_labels(labels: Sequence[str] | None, prefix: str = "sub") -> list[str] | None:
    """Strip an optional ``sub-``/``ses-`` prefix so that "01" and "sub-01" select the same participant."""
    if labels is None:
        return None
    normalized = []
    for label in labels:
        bare = label.strip()
        if bare.startswith(f"{prefix}-"):
            bare = bare[len(prefix) + 1 :]
        if not bare or not bare.isalnum():
            raise InputError(f"invalid {prefix} label {label!r}: BIDS labels are letters and digits only")
        if bare not in normalized:
            normalized.append(bare)
    return normalized


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read {what} ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: {what} is not valid JSON ({error})") from None


def load_layout(bids_dir: Path, *, validate: bool) -> BIDSLayout:
    """Index ``bids_dir`` in memory after checking it is a BIDS dataset (and, if asked, that it validates)."""
    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.exists():
        raise InputError(f"{bids_dir}: the BIDS directory does not exist")
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: not a directory")
    description_path = bids_dir / "dataset_description.json"
    if not description_path.is_file():
        raise InputError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    if not isinstance(_read_json(description_path, "dataset_description.json"), dict):
        raise InputError(f"{description_path}: dataset_description.json must hold a JSON object")
    if validate:
        from bids_jdam.bids.validator import run_bids_validator

        result = run_bids_validator(bids_dir)
        if not result.ok:
            shown = "; ".join(result.errors[:5])
            more = f" (and {len(result.errors) - 5} more)" if len(result.errors) > 5 else ""
            raise InputError(
                f"{bids_dir}: the BIDS validator found {len(result.errors)} error(s): {shown}{more}; "
                "fix them or pass --skip-bids-validation"
            )
    # pybids' own filename filter knows an older specification; the validator above is the reference.
    broken = unreadable_sidecars(bids_dir)
    shared = [path for path in broken if _subject_of(path, bids_dir) is None]
    if shared:
        raise InputError(f"{shared[0]}: not valid JSON ({broken[shared[0]]}); it applies to every participant")
    ignore = list(DEFAULT_LOCATIONS_TO_IGNORE) + [
        re.compile("^/" + re.escape(path.relative_to(bids_dir).as_posix()) + "$") for path in broken
    ]
    try:
        return BIDSLayout(bids_dir, validate=False, database_path=None, indexer=BIDSLayoutIndexer(ignore=ignore))
    except Exception as error:  # noqa: BLE001 - pybids raises OSError, ValueError, ... with multi-line messages
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{bids_dir}: pybids cannot index the dataset ({first_line})") from None


def unreadable_sidecars(bids_dir: Path) -> dict[Path, str]:
    """The raw dataset's JSON files that do not parse, with the reason (derivatives, sourcedata, hidden skipped)."""
    broken = {}
    for path in sorted(Path(bids_dir).rglob("*.json")):
        if any(
            part.startswith(".") or part in ("derivatives", "sourcedata") for part in path.relative_to(bids_dir).parts
        ):
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
            broken[path] = str(problem)
    return broken


def participants_with_broken_sidecars(bids_dir: Path) -> dict[str, str]:
    """Each participant whose folder holds a JSON file that does not parse, with one line naming the file: its
    images are left out of the index's metadata, so they are not processed, while the others are."""
    failures: dict[str, str] = {}
    for path, problem in unreadable_sidecars(Path(bids_dir).absolute()).items():
        subject = _subject_of(path, Path(bids_dir).absolute())
        if subject is not None:
            failures.setdefault(subject, f"{path}: not valid JSON ({problem})")
    return failures


def _subject_of(path: Path, bids_dir: Path) -> str | None:
    top = path.relative_to(bids_dir).parts[0]
    return top.removeprefix("sub-") if top.startswith("sub-") and top != path.name else None


def _as_pybids_value(value: Any) -> Any:
    """fMRIPrep's filter-file convention: null means "entity absent", "*" means "any value"."""
    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    return value


def load_filters(path: Path) -> dict[str, dict[str, Any]]:
    """Read a --bids-filter-file: ``{"t1w": {entity: value}, "pet": {entity: value}}``."""
    path = Path(path)
    filters = _read_json(path, "BIDS filter file")
    if not isinstance(filters, dict):
        raise InputError(f'{path}: a BIDS filter file must hold a JSON object such as {{"t1w": {{...}}}}')
    unknown = sorted(set(filters) - set(FILTER_QUERIES))
    if unknown:
        raise InputError(f"{path}: unknown query name(s) {', '.join(unknown)}; known: {', '.join(FILTER_QUERIES)}")
    for query_name, entities in filters.items():
        if not isinstance(entities, dict):
            raise InputError(f'{path}: "{query_name}" must map entity names to values, got {entities!r}')
        for entity, value in entities.items():
            if isinstance(value, (dict, float)) or (isinstance(value, list) and not value):
                raise InputError(f'{path}: "{query_name}"."{entity}" has an unusable value {value!r}')
    return {
        name: {key: _as_pybids_value(value) for key, value in entities.items()} for name, entities in filters.items()
    }


def _check_filter_entities(layout: BIDSLayout, filters: dict[str, Any], query_name: str) -> None:
    unknown = sorted(set(filters) - set(layout.get_entities()))
    if unknown:
        raise InputError(
            f'{layout.root}: the "{query_name}" filter uses entities this dataset does not have: {", ".join(unknown)}'
        )


def _filename_entities(path: Path) -> dict[str, str]:
    """Entities as written in the file name (``{"sub": "01", "ses": "A", "run": "1"}``), in file-name order."""
    stem = path.name.split(".", 1)[0]
    return dict(part.split("-", 1) for part in stem.split("_")[:-1] if "-" in part)


@dataclass(frozen=True)
class AnatInput:
    """One anatomical image to process, with the metadata that its sidecars (inheritance included) give it."""

    path: Path
    relative_path: str
    subject: str
    session: str | None
    run: str | None
    acquisition: str | None
    suffix: str
    entities: dict[str, str]
    metadata: dict[str, Any] = field(repr=False)
    field_strength: float | None

    @property
    def bids_uri(self) -> str:
        """The BIDS URI of the image relative to the raw dataset (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``)."""
        return f"bids:raw:{self.relative_path}"

    @property
    def output_key(self) -> tuple[str, str | None, str | None]:
        """What distinguishes this image's outputs from another's (see the module docstring)."""
        return (self.subject, self.session, self.run)


@dataclass(frozen=True)
class AnatSelection:
    """The anatomical images to process and the selected participants that have none (reported as failed)."""

    inputs: list[AnatInput]
    missing: list[str]


def _anat_input(layout: BIDSLayout, bids_file: Any) -> AnatInput:
    path = Path(bids_file.path)
    entities = _filename_entities(path)
    metadata = layout.get_metadata(bids_file.path)
    strength = metadata.get("MagneticFieldStrength")
    return AnatInput(
        path=path,
        relative_path=path.relative_to(Path(layout.root)).as_posix(),
        subject=entities["sub"],
        session=entities.get("ses"),
        run=entities.get("run"),
        acquisition=entities.get("acq"),
        suffix=bids_file.entities["suffix"],
        entities=entities,
        metadata=metadata,
        field_strength=float(strength) if isinstance(strength, (int, float)) else None,
    )


def _select_subjects(layout: BIDSLayout, participants: list[str] | None) -> list[str]:
    available = sorted(layout.get_subjects())
    wanted = normalize_labels(participants, "sub")
    if wanted is None:
        if not available:
            raise InputError(f"{layout.root}: the dataset has no sub-* folders")
        return available
    unknown = [label for label in wanted if label not in available]
    if unknown:
        raise InputError(f"{layout.root}: participant(s) not in the dataset: {', '.join('sub-' + s for s in unknown)}")
    return wanted


def _select_sessions(layout: BIDSLayout, subjects: list[str], sessions: list[str] | None) -> list[str] | None:
    wanted = normalize_labels(sessions, "ses")
    if wanted is None:
        return None
    available = set(layout.get_sessions(subject=subjects))
    unknown = [label for label in wanted if label not in available]
    if unknown:
        raise InputError(
            f"{layout.root}: session(s) not found for the selected participants: "
            f"{', '.join('ses-' + s for s in unknown)}"
        )
    return wanted


def _refuse_colliding_outputs(inputs: list[AnatInput]) -> None:
    by_key: dict[tuple, list[AnatInput]] = defaultdict(list)
    for anat in inputs:
        by_key[anat.output_key].append(anat)
    for group in by_key.values():
        if len(group) > 1:
            names = ", ".join(anat.path.name for anat in group)
            raise InputError(
                f"{group[0].path.parent}: {names} differ only in entities that derivative names cannot carry; "
                'select one with --bids-filter-file, e.g. {"t1w": {"acquisition": "<label>"}}'
            )


def find_anatomicals(
    layout: BIDSLayout,
    *,
    participants: list[str] | None,
    sessions: list[str] | None,
    suffix: str = "T1w",
    filters: dict[str, Any] | None = None,
) -> AnatSelection:
    """Every anatomical image of the selected participants and sessions; several runs each get an entry."""
    if suffix not in ANAT_SUFFIXES:
        raise InputError(f"unsupported anatomical suffix {suffix!r}; use one of {', '.join(ANAT_SUFFIXES)}")
    filters = dict(filters or {})
    _check_filter_entities(layout, filters, "t1w")
    subjects = _select_subjects(layout, participants)
    session_labels = _select_sessions(layout, subjects, sessions)
    query = {**filters, "datatype": "anat", "suffix": suffix, "extension": NIFTI_EXTENSIONS}
    if session_labels is not None:
        query["session"] = session_labels
    inputs: list[AnatInput] = []
    missing: list[str] = []
    for subject in subjects:
        found = [_anat_input(layout, f) for f in layout.get(**{**query, "subject": subject})]
        found.sort(key=lambda anat: anat.relative_path)
        if not found:
            LOGGER.warning("sub-%s: no %s image matches the selection", subject, suffix)
            missing.append(subject)
            continue
        if len(found) > 1:
            LOGGER.info(
                "sub-%s: %d %s images, each gets its own outputs: %s",
                subject,
                len(found),
                suffix,
                ", ".join(anat.path.name for anat in found),
            )
        inputs.extend(found)
    if not inputs:
        raise InputError(
            f"{layout.root}: no {suffix} image for the selected participants "
            f"({', '.join('sub-' + s for s in subjects)})"
        )
    _refuse_colliding_outputs(inputs)
    return AnatSelection(inputs=inputs, missing=missing)


def is_fdg_tracer(label: str | None) -> bool:
    """trc-FDG, Clinica's trc-18FFDG and other spellings all contain "fdg"."""
    return label is not None and "fdg" in label.lower()


def find_fdg_pet(
    layout: BIDSLayout,
    subject: str,
    session: str | None,
    *,
    rec: str | None = None,
    filters: dict[str, Any] | None = None,
) -> Path | None:
    """The one FDG-PET image of a subject and session, or None; several candidates are an InputError."""
    filters = dict(filters or {})
    _check_filter_entities(layout, filters, "pet")
    query = {
        **filters,
        "subject": subject,
        "session": session if session is not None else Query.NONE,
        "datatype": "pet",
        "suffix": "pet",
        "extension": NIFTI_EXTENSIONS,
    }
    candidates = [
        Path(f.path)
        for f in layout.get(**query)
        if is_fdg_tracer(f.entities.get("tracer"))
        and (rec is None or str(f.entities.get("reconstruction", "")).lower() == rec.lower())
    ]
    candidates.sort()
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise InputError(f"{candidates[0].parent}: several FDG-PET images ({names}); choose one with --pet-rec")
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class TrainingPair:
    """A T1w image and the FDG-PET of the same subject and session."""

    subject: str
    session: str | None
    t1w: AnatInput
    pet: Path


def find_training_pairs(
    layout: BIDSLayout,
    participants: list[str] | None = None,
    rec: str | None = None,
    filters: dict[str, dict[str, Any]] | None = None,
) -> list[TrainingPair]:
    """Every (T1w, FDG-PET) pair of the same subject and session; sessions without both are skipped."""
    filters = filters or {}
    selection = find_anatomicals(layout, participants=participants, sessions=None, filters=filters.get("t1w"))
    pairs = []
    for anat in selection.inputs:
        pet = find_fdg_pet(layout, anat.subject, anat.session, rec=rec, filters=filters.get("pet"))
        if pet is None:
            LOGGER.info(
                "sub-%s%s: no FDG-PET, not a training pair",
                anat.subject,
                f" ses-{anat.session}" if anat.session else "",
            )
            continue
        pairs.append(TrainingPair(subject=anat.subject, session=anat.session, t1w=anat, pet=pet))
    if not pairs:
        raise InputError(f"{layout.root}: no subject has both a T1w and an FDG-PET image in the same session")
    return pairs


def dataset_identity(bids_dir: Path) -> str:
    """What tells datasets apart in a model card: Name, DOI and the generator's description (phantom settings).

    Two phantom datasets have the same subject labels but different subjects; their GeneratedBy descriptions
    (which carry the phantom's seed) differ, so a model card can tell whether a participant was trained on.
    """
    try:
        description = json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        return str(Path(bids_dir).resolve())
    generated = description.get("GeneratedBy") or [{}]
    first = generated[0] if isinstance(generated, list) and generated and isinstance(generated[0], dict) else {}
    return "|".join(
        str(x) for x in (description.get("Name", ""), description.get("DatasetDOI", ""), first.get("Description", ""))
    )
