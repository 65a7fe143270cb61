"""The phantom's parameters: fixed model constants and the per-subject random draws.

Everything random about a subject is drawn here, from a generator seeded by (dataset seed, subject index) only, so
subject k is the same whatever the number of subjects. The other phantom modules are deterministic functions of
these draws.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from bids_jdam.data.phantom.fdg_norms import region_groups

# Bumped whenever what the generator makes for given settings changes; recorded in every dataset's description.
PHANTOM_VERSION = 2
# FDG uptake by tissue class follows BrainWeb's FDG model (GM 128, WM 32, skin 16, CSF and bone 0): GM:WM = 4:1.
GM_WM_RATIO_RANGE = (3.5, 4.5)
SKIN_TO_GM_UPTAKE = 16.0 / 128.0
# Between-subject variation of regional uptake (log-normal sd, after normalisation) and left-right asymmetry (sd of
# (L - R) / mean), of the size healthy FDG studies report; docs/phantom.md cites them.
REGIONAL_UPTAKE_SD = 0.05
ASYMMETRY_SD = 0.02
AGE_OF_NORMS = 70.0  # the norms are the pattern of a 70-year-old; age changes act around it
PONS_UPTAKE = 0.75  # relative to the cerebellar cortex, in all tissue of the pons (a phantom choice)
AD_SEVERITY_RANGE = (0.6, 1.4)  # multiplies each group's ad_hypometabolism
AD_REGIONAL_JITTER_SD = 0.2  # log-normal sd of each group's hypometabolism around severity x pattern
AD_ATROPHY_LINK = 0.5  # weight of the hypometabolism severity in the atrophy severity (the rest is independent)
# Coarse regions whose gray matter thins with age, and those that thin more in AD.
ATROPHY_REGIONS = (
    "frontal",
    "parietal",
    "temporal",
    "occipital",
    "precuneus_posterior_cingulate",
    "striatum",
    "thalamus",
    "hippocampus",
    "cerebellum",
)
AD_ATROPHIC_REGIONS = ("parietal", "temporal", "precuneus_posterior_cingulate", "hippocampus")
PSF_FWHM_RANGE_MM = (5.0, 8.0)
FIELD_STRENGTHS = (3, 5, 7)


@dataclass(frozen=True)
class MRIProtocol:
    """A T1w acquisition at one field strength: resolution, field of view, SNR and bias-field strength."""

    field_strength: int
    voxel_mm: float
    fov_mm: tuple[float, float, float]
    snr: float  # white-matter signal / noise standard deviation
    bias_std: float  # standard deviation of the log bias field
    sequence: str  # "MPRAGE" or "MP2RAGE" (UNIT1: uniform image with a noisy background)


def mri_protocol(field_strength: int, fast: bool) -> MRIProtocol:
    """The T1w protocol of a field strength; fast mode keeps the contrast and shrinks the resolution."""
    voxel = {3: 1.0, 5: 0.8, 7: 0.7}[field_strength]
    if fast:
        voxel = {3: 3.0, 5: 2.5, 7: 2.5}[field_strength]
    return MRIProtocol(
        field_strength=field_strength,
        voxel_mm=voxel,
        fov_mm=(176.0, 216.0, 184.0),
        snr={3: 22.0, 5: 30.0, 7: 38.0}[field_strength],
        bias_std={3: 0.10, 5: 0.18, 7: 0.25}[field_strength],
        sequence="MP2RAGE" if field_strength == 7 else "MPRAGE",
    )


@dataclass
class Spot:
    """A focal hot or cold spot of tracer uptake (a lesion-like variation that the template cannot predict)."""

    centre_mm: list[float]
    radius_mm: float
    factor: float  # multiplies the activity at the centre; a Gaussian profile of width radius_mm


@dataclass
class AnatomyDraw:
    """Template-space changes of one subject: atrophy and ventricle size."""

    gm_thinning: dict[str, float]  # fraction of gray matter that becomes CSF, per region
    ventricle_expansion: float  # local radial expansion around the lateral ventricles (0 = template)
    shell_thickness: float  # scales the scalp/skull layers


@dataclass
class PETDraw:
    """Tracer model of one subject: tissue uptake, regional pattern, AD hypometabolism, spots, PSF and dose."""

    gm_uptake_bqml: float  # cortical gray matter (the neocortex group's level), Bq/mL
    gm_wm_ratio: float
    regional_uptake: dict[str, float]  # per fdg_norms group, relative to the cerebellar cortex, before hypometabolism
    asymmetry: dict[str, float]  # per group, (left - right) / mean
    ad_severity: float  # 0 for CN
    hypometabolism: dict[str, float]  # per group, fraction of uptake lost
    spots: list[Spot]
    psf_fwhm_mm: float
    noise_cov: float  # coefficient of variation of the noise at gray-matter level
    injected_mbq: float
    body_weight_kg: float
    voxel_mm: float


@dataclass
class AcquisitionDraw:
    """What changes between sessions: head pose in both scanners, bias field, noise and scanner scaling."""

    rotation_deg: list[float]
    translation_mm: list[float]
    pet_rotation_deg: list[float]  # PET pose relative to the T1w scanner
    pet_translation_mm: list[float]
    t1_scale: float  # arbitrary scanner units of white matter
    seed: int  # seeds the noise and bias fields of this session


@dataclass
class SubjectDraw:
    """All random choices for one subject."""

    index: int
    diagnosis: str
    age: int
    sex: str
    field_strength: int
    head_scale: list[float]
    warp_amplitude_mm: float
    warp_seed: int
    anatomy: AnatomyDraw
    pet: PETDraw
    sessions: list[AcquisitionDraw] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of subject ``index``: depends on the dataset seed and the index only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))


def diagnosis_of(seed: int, index: int) -> str:
    """CN or AD, balanced: subjects 2j and 2j+1 get one of each, in an order drawn from the seed and pair j."""
    pair_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index // 2)))
    first = "CN" if pair_rng.random() < 0.5 else "AD"
    return first if index % 2 == 0 else ("AD" if first == "CN" else "CN")


def draw_anatomy(rng: np.random.Generator, ageing: float, atrophy_severity: float) -> AnatomyDraw:
    """Gray-matter thinning and ventricle size: with age for everyone, more in AD (``atrophy_severity`` > 0)."""
    thinning = {name: float(rng.uniform(0.0, 0.04) + 0.03 * ageing) for name in ATROPHY_REGIONS}
    for name in AD_ATROPHIC_REGIONS if atrophy_severity > 0 else ():
        thinning[name] += float(rng.uniform(0.10, 0.25) * atrophy_severity)
    expansion = (
        rng.uniform(0.12, 0.22) * atrophy_severity if atrophy_severity > 0 else (rng.uniform(0.0, 0.06) + 0.04 * ageing)
    )
    return AnatomyDraw(
        gm_thinning=thinning, ventricle_expansion=float(expansion), shell_thickness=float(rng.uniform(0.85, 1.2))
    )


def draw_regional_pattern(rng: np.random.Generator, age: int, ad_severity: float) -> tuple[dict, dict, dict]:
    """Per fdg_norms group: uptake (with subject variation and age), left-right asymmetry and AD hypometabolism."""
    uptake, asymmetry, hypometabolism = {}, {}, {}
    for name, group in region_groups().items():
        ageing = 1.0 + group.age_change_per_decade * (age - AGE_OF_NORMS) / 10.0
        uptake[name] = float(group.activity_uptake * ageing * np.exp(rng.normal(0.0, REGIONAL_UPTAKE_SD)))
        asymmetry[name] = float(rng.normal(0.0, ASYMMETRY_SD))
        jitter = np.exp(rng.normal(0.0, AD_REGIONAL_JITTER_SD))
        if ad_severity > 0 and group.ad_hypometabolism > 0:
            hypometabolism[name] = float(min(group.ad_hypometabolism * ad_severity * jitter, 0.6))
    return uptake, asymmetry, hypometabolism


def draw_spots(rng: np.random.Generator) -> list[Spot]:
    """One subject in four carries a lesion-like hot or cold spot in the cortex, which the MRI cannot predict."""
    if rng.random() >= 0.25:
        return []
    centre = [float(rng.uniform(-55, 55)), float(rng.uniform(-80, 50)), float(rng.uniform(-10, 55))]
    factor = float(rng.uniform(0.4, 0.7) if rng.random() < 0.6 else rng.uniform(1.3, 1.6))
    return [Spot(centre_mm=centre, radius_mm=float(rng.uniform(6, 12)), factor=factor)]


def draw_pet(rng: np.random.Generator, age: int, ad_severity: float, pet_voxel_mm: float) -> PETDraw:
    """Tracer model of one subject: dose, tissue uptake, regional pattern, spots, PSF and noise."""
    uptake, asymmetry, hypometabolism = draw_regional_pattern(rng, age, ad_severity)
    spots = draw_spots(rng)
    weight = float(rng.uniform(55, 95))
    injected = float(rng.uniform(170, 200))
    suv_gm = float(rng.uniform(7.0, 10.0))
    return PETDraw(
        gm_uptake_bqml=suv_gm * injected * 1e6 / (weight * 1000.0),
        gm_wm_ratio=float(rng.uniform(*GM_WM_RATIO_RANGE)),
        regional_uptake=uptake,
        asymmetry=asymmetry,
        ad_severity=ad_severity,
        hypometabolism=hypometabolism,
        spots=spots,
        psf_fwhm_mm=float(rng.uniform(*PSF_FWHM_RANGE_MM)),
        noise_cov=float(rng.uniform(0.03, 0.07)),
        injected_mbq=injected,
        body_weight_kg=weight,
        voxel_mm=pet_voxel_mm,
    )


def draw_subject(seed: int, index: int, field_strength: int, n_sessions: int, pet_voxel_mm: float) -> SubjectDraw:
    """Draw one subject; AD subjects get hypometabolism and, partly linked to it, atrophy and larger ventricles."""
    rng = subject_rng(seed, index)
    diagnosis = diagnosis_of(seed, index)
    is_ad = diagnosis == "AD"
    age = int(rng.integers(62, 88) if is_ad else rng.integers(60, 84))
    ad_severity = float(rng.uniform(*AD_SEVERITY_RANGE)) if is_ad else 0.0
    atrophy_severity = (
        (AD_ATROPHY_LINK * ad_severity + (1 - AD_ATROPHY_LINK) * float(rng.uniform(*AD_SEVERITY_RANGE)))
        if is_ad
        else 0.0
    )
    anatomy = draw_anatomy(rng, (age - 60) / 25.0, atrophy_severity)
    pet = draw_pet(rng, age, ad_severity, pet_voxel_mm)
    sessions = [
        AcquisitionDraw(
            rotation_deg=[float(v) for v in rng.uniform(-10, 10, 3)],
            translation_mm=[float(v) for v in rng.uniform(-10, 10, 3)],
            pet_rotation_deg=[float(v) for v in rng.uniform(-6, 6, 3)],
            pet_translation_mm=[float(v) for v in rng.uniform(-15, 15, 3)],
            t1_scale=float(rng.uniform(300, 3000)),
            seed=int(rng.integers(2**31)),
        )
        for _ in range(n_sessions)
    ]
    return SubjectDraw(
        index=index,
        diagnosis=diagnosis,
        age=age,
        sex="F" if rng.random() < 0.5 else "M",
        field_strength=field_strength,
        head_scale=[float(v) for v in np.exp(rng.normal(0.0, 0.04, 3)).clip(0.92, 1.08)],
        warp_amplitude_mm=float(rng.uniform(2.0, 4.0)),
        warp_seed=int(rng.integers(2**31)),
        anatomy=anatomy,
        pet=pet,
        sessions=sessions,
    )
