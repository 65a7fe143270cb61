"""Write a whole phantom dataset (raw BIDS + ground truth), atomically, and find a subject's truth files again."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from threadpoolctl import threadpool_limits

from bids_jdam.config import TEMPLATE_NAME
from bids_jdam.data.phantom.anatomy import build_anatomy, fine_template
from bids_jdam.data.phantom.fdg_norms import phantom_regions
from bids_jdam.data.phantom.geometry import SubjectPlacement, rigid_affine, smooth_displacement
from bids_jdam.data.phantom.model import FIELD_STRENGTHS, PHANTOM_VERSION, SubjectDraw, draw_subject, mri_protocol
from bids_jdam.data.phantom.mri import synthesize_t1w
from bids_jdam.data.phantom.pet import synthesize_pet, template_pet
from bids_jdam.data.phantom.writer import (
    CHANGES,
    GENERATOR_NAME,
    PARTICIPANTS_JSON,
    README,
    TRUTH_DIR,
    Layout,
    dataset_description,
    pet_sidecar,
    raw_names,
    save_json,
    save_nifti,
    sidecar,
    t1w_sidecar,
    truth_names,
)
from bids_jdam.data.regions import coarse_regions
from bids_jdam.data.template import grid_affine
from bids_jdam.errors import InputError
from bids_jdam.io import atomic

MNI_CODE = 4  # NIfTI xform code of a template space
SCANNER_CODE = 1


@dataclass(frozen=True)
class PhantomSettings:
    """Dataset-wide choices; ``field_strength`` 0 means a 3/5/7 T mix (subject k gets FIELD_STRENGTHS[k % 3])."""

    n_subjects: int
    seed: int
    field_strength: int
    layout: str
    sessions: int
    grid_spacing_mm: float
    fast: bool

    @property
    def fine_stride(self) -> int:
        """Voxel step of the anatomy grid in nilearn's 1 mm template: 2 mm anatomy in fast mode."""
        return 2 if self.fast else 1

    @property
    def pet_voxel_mm(self) -> float:
        return 4.0 if self.fast else 2.0

    def field_strength_of(self, index: int) -> int:
        return self.field_strength or FIELD_STRENGTHS[index % len(FIELD_STRENGTHS)]


@dataclass(frozen=True)
class PhantomTruth:
    """Paths of one subject/session's ground truth (template space, model grid) under ``derivatives/phantom``."""

    subject: str
    session: str | None
    grid_spacing_mm: float
    t1w: Path
    brain_mask: Path
    dseg: Path
    dseg_tsv: Path
    gm_probseg: Path
    wm_probseg: Path
    pet_activity: Path  # true concentration (Bq/mL), no PSF; its sidecar holds the subject's drawn parameters
    pet_bqml: Path  # noise-free PET (activity blurred by the subject's PSF), Bq/mL
    pet_suvr: Path  # noise-free PET / its cerebellum + pons mean
    transforms: Path  # JSON: affines and the convention of the displacement field
    displacement: Path  # NIfTI: the displacement field u (mm) in T1w scanner space


def is_phantom_dataset(bids_dir: Path) -> bool:
    """True when ``bids_dir``'s dataset_description.json says bids-jdam-phantom made it."""
    try:
        description = json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy", []) if isinstance(description, dict) else []
    return any(isinstance(entry, dict) and entry.get("Name") == GENERATOR_NAME for entry in generated)


def generate_phantom_dataset(
    out_dir: Path,
    n_subjects: int,
    seed: int,
    *,
    field_strength: int | str = 3,
    layout: str = "bids",
    sessions: int = 1,
    grid_spacing_mm: float = 2.0,
    fast: bool = False,
    jobs: int | None = None,
) -> Path:
    """Write a phantom BIDS dataset with its ground truth to ``out_dir`` (replacing an earlier phantom there).

    ``field_strength`` is 3, 5, 7 or "mix"; ``layout`` "bids" or "clinica" (Clinica's adni-to-bids names);
    ``jobs`` worker processes (default: the available cores). The result depends only on the arguments other
    than ``jobs``, and subject k is the same whatever ``n_subjects``.
    """
    out_dir = Path(out_dir)
    settings = _check_settings(n_subjects, seed, field_strength, layout, sessions, grid_spacing_mm, fast)
    _check_target(out_dir)
    # Warm the per-process caches before forking so that workers share them.
    fine_template(settings.fine_stride)
    coarse_regions(settings.grid_spacing_mm)
    phantom_regions(settings.grid_spacing_mm)

    atomic.make_dirs(out_dir.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_dataset_files(staging, settings)
        workers = min(jobs or len(os.sched_getaffinity(0)), n_subjects)
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                rows = list(
                    pool.map(_write_subject, [staging] * n_subjects, [settings] * n_subjects, range(n_subjects))
                )
        else:
            rows = [_write_subject(staging, settings, index) for index in range(n_subjects)]
        _write_participants(staging, rows)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def phantom_truth(bids_dir: Path, subject: str, session: str | None = None) -> PhantomTruth:
    """Ground-truth paths of ``subject`` (with or without ``sub-``); ``session`` is needed when there are several."""
    bids_dir = Path(bids_dir)
    subject = subject.removeprefix("sub-")
    session = session.removeprefix("ses-") if session else None
    subject_dir = bids_dir / TRUTH_DIR / f"sub-{subject}"
    if not subject_dir.is_dir():
        raise InputError(f"{subject_dir}: no phantom ground truth for sub-{subject} (not a bids-jdam phantom?)")
    if session is None:
        found = sorted(p.name.removeprefix("ses-") for p in subject_dir.glob("ses-*"))
        if len(found) > 1:
            raise InputError(f"{subject_dir}: sub-{subject} has sessions {', '.join(found)}; name one")
        session = found[0] if found else None
    layout = Layout("clinica" if subject.startswith("ADNI") else "bids")
    paths = {key: bids_dir / path for key, path in truth_names(layout, subject, session).items()}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: phantom ground-truth file is missing")
    spacing = float(nib.load(paths["t1w"]).header.get_zooms()[0])
    return PhantomTruth(subject=subject, session=session, grid_spacing_mm=spacing, **paths)


def _check_settings(n_subjects, seed, field_strength, layout, sessions, grid_spacing_mm, fast) -> PhantomSettings:
    if n_subjects < 1:
        raise InputError(f"--subjects must be at least 1 (got {n_subjects})")
    if layout not in ("bids", "clinica"):
        raise InputError(f"layout must be 'bids' or 'clinica' (got {layout!r})")
    if sessions < 1:
        raise InputError(f"--sessions must be at least 1 (got {sessions})")
    strength = 0 if field_strength == "mix" else int(field_strength)
    if strength not in (0,) + FIELD_STRENGTHS:
        raise InputError(f"field strength must be 3, 5, 7 or 'mix' (got {field_strength!r})")
    settings = PhantomSettings(n_subjects, int(seed), strength, layout, sessions, float(grid_spacing_mm), fast)
    if grid_spacing_mm not in (2.0, 4.0) or grid_spacing_mm % settings.fine_stride:
        raise InputError(f"grid spacing must be 2 or 4 mm (got {grid_spacing_mm})")
    return settings


def _check_target(out_dir: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier phantom."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_phantom_dataset(out_dir):
        raise InputError(f"{out_dir}: not empty and not a bids-jdam phantom dataset; refusing to overwrite it")


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the finished dataset into place (a rename, so readers never see half a dataset)."""
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        atomic.move(out_dir, retired / out_dir.name)
        atomic.move(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        atomic.move(staging, out_dir)
    out_dir.chmod(0o755)


def _write_dataset_files(root: Path, settings: PhantomSettings) -> None:
    summary = {
        "subjects": settings.n_subjects,
        "seed": settings.seed,
        "field_strength": settings.field_strength or "mix",
        "layout": settings.layout,
        "sessions": settings.sessions,
        "grid_spacing_mm": settings.grid_spacing_mm,
        "fast": settings.fast,
        "phantom_version": PHANTOM_VERSION,
    }
    save_json(root / "dataset_description.json", dataset_description(False, summary))
    save_json(root / TRUTH_DIR / "dataset_description.json", dataset_description(True, summary))
    (root / TRUTH_DIR / ".bidsignore").write_text("*_xfm.nii.gz\n*_xfm.json\n")  # not yet in BIDS derivatives
    (root / "README").write_text(README)
    (root / "CHANGES").write_text(CHANGES)
    save_json(root / "participants.json", PARTICIPANTS_JSON)


def _write_participants(root: Path, rows: list[dict]) -> None:
    columns = list(PARTICIPANTS_JSON)
    lines = ["\t".join(columns)] + ["\t".join(str(row[c]) for c in columns) for row in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")


def _write_subject(root: Path, settings: PhantomSettings, index: int) -> dict:
    """Make and write one subject (all sessions); returns its participants.tsv row.

    BLAS runs single-threaded here: subjects are already spread over processes, and threaded BLAS on the small
    interpolation matrices was ten times slower on a busy machine.
    """
    with threadpool_limits(limits=1):
        return _make_subject(root, settings, index)


def _make_subject(root: Path, settings: PhantomSettings, index: int) -> dict:
    layout = Layout(settings.layout)
    subject = layout.subject(index, settings.n_subjects)
    strength = settings.field_strength_of(index)
    draw = draw_subject(settings.seed, index, strength, settings.sessions, settings.pet_voxel_mm)
    protocol = mri_protocol(strength, settings.fast)
    fine = fine_template(settings.fine_stride)
    anatomy = build_anatomy(draw.anatomy, settings.fine_stride, settings.grid_spacing_mm)
    pet = template_pet(anatomy, draw.pet, settings.grid_spacing_mm)
    displacement, displacement_affine = smooth_displacement(
        np.random.default_rng(draw.warp_seed), draw.warp_amplitude_mm
    )

    for session, acquisition in zip(layout.sessions(settings.sessions), draw.sessions):
        placement = SubjectPlacement(
            template_to_scanner=rigid_affine(acquisition.rotation_deg, acquisition.translation_mm, draw.head_scale),
            pet_to_t1w=rigid_affine(acquisition.pet_rotation_deg, acquisition.pet_translation_mm),
            displacement=displacement,
            displacement_affine=displacement_affine,
        )
        raw = {key: root / path for key, path in raw_names(layout, subject, session).items()}
        t1w, t1w_affine = synthesize_t1w(anatomy, fine, placement, protocol, acquisition)
        save_nifti(raw["t1w"], t1w, t1w_affine, code=SCANNER_CODE)
        save_json(sidecar(raw["t1w"]), t1w_sidecar(protocol))
        pet_native, pet_affine = synthesize_pet(
            pet, draw.pet, placement, settings.grid_spacing_mm, acquisition.seed + 1
        )
        save_nifti(raw["pet"], pet_native, pet_affine, code=SCANNER_CODE)
        save_json(sidecar(raw["pet"]), pet_sidecar(draw.pet))
        _write_truth(root, layout, subject, session, settings, draw, anatomy, pet, placement)
    return {
        "participant_id": f"sub-{subject}",
        "diagnosis": draw.diagnosis,
        "age": draw.age,
        "sex": draw.sex,
        "field_strength": strength,
    }


def _write_truth(root, layout, subject, session, settings, draw: SubjectDraw, anatomy, pet, placement) -> None:
    """Template-space truth on the model grid, and the transforms that took it to the native images."""
    paths = {key: root / path for key, path in truth_names(layout, subject, session).items()}
    affine = grid_affine(settings.grid_spacing_mm)
    labels, names = coarse_regions(settings.grid_spacing_mm)
    mri_json = {"SkullStripped": True, "Description": "Template-space truth before the subject warp"}
    for key, data, dtype in (
        ("t1w", anatomy.t1, np.float32),
        ("gm_probseg", anatomy.gm, np.float32),
        ("wm_probseg", anatomy.wm, np.float32),
        ("brain_mask", anatomy.brain_mask, np.uint8),
        ("dseg", labels, np.int16),
    ):
        save_nifti(paths[key], data, affine, code=MNI_CODE, dtype=dtype)
        save_json(sidecar(paths[key]), mri_json | ({"Type": "Brain"} if key == "brain_mask" else {}))
    paths["dseg_tsv"].write_text("index\tname\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(names.items())))

    pet_json = {
        "SkullStripped": False,
        "Units": "Bq/mL",
        "TracerName": "FDG",
        "PSFFWHMmm": draw.pet.psf_fwhm_mm,
        "ReferenceRegion": "cerebellum+pons",
        "ReferenceConcentrationBqml": pet.reference_bqml,
    }
    save_nifti(paths["pet_activity"], pet.activity, affine, code=MNI_CODE)
    save_json(
        sidecar(paths["pet_activity"]),
        pet_json
        | {
            "Description": "True tracer concentration (no PSF, no noise) before the subject warp",
            "GrayMatterUptakeBqml": pet.gm_uptake_bqml,
            "WhiteMatterUptakeBqml": pet.wm_uptake_bqml,
            "PhantomParameters": draw.to_dict(),
        },
    )
    save_nifti(paths["pet_bqml"], pet.noise_free, affine, code=MNI_CODE)
    save_json(sidecar(paths["pet_bqml"]), pet_json | {"Description": "Activity blurred by the subject's PSF, no noise"})
    save_nifti(paths["pet_suvr"], pet.suvr, affine, code=MNI_CODE)
    save_json(
        sidecar(paths["pet_suvr"]),
        pet_json
        | {"Units": "unitless", "Description": "Noise-free PET divided by its mean in cerebellum + pons (SUVR)"},
    )

    field = placement.displacement
    save_nifti(paths["displacement"], field[:, :, :, None, :], placement.displacement_affine, code=SCANNER_CODE)
    save_json(
        paths["transforms"],
        {
            "Convention": "A T1w scanner point p (RAS mm) maps to the template point q = inv(A) (p + u(p)), with u the "
            "displacement field in the NIfTI of the same name (mm, RAS, trilinear interpolation, T1w scanner space). "
            "A PET world point p_pet is first moved to T1w scanner space: p = P p_pet.",
            "Template": TEMPLATE_NAME,
            "TemplateToScannerAffine": placement.template_to_scanner.tolist(),
            "PETToT1wAffine": placement.pet_to_t1w.tolist(),
            "HeadScale": draw.head_scale,
            "DisplacementAmplitudeMm": draw.warp_amplitude_mm,
        },
    )
