"""How a synthetic PET was made: one record, from which both its sidecars and its metrics JSON are written.

The sidecars (:func:`bids_jdam.bids.sidecars.pet_sidecar`) copy all of it, so that a result can be traced and
reproduced; the metrics JSON keeps the model and the sampler (:class:`ModelInfo`, :class:`SamplerInfo`), which is
what the reports and the group level read.
"""

from __future__ import annotations

from dataclasses import dataclass

from bids_jdam.config import SamplerConfig


@dataclass(frozen=True)
class ModelInfo:
    """Which weights made the image; ``trained_on_phantoms`` puts a warning banner on the report.

    ``spread_scale``: the posterior spread calibration of the model card applied to the samples (None: none).
    """

    name: str
    sha256: str
    trained_on_phantoms: bool
    method: str = "jdam"
    probabilistic: bool = True
    spread_scale: float | None = None


@dataclass(frozen=True)
class SamplerInfo:
    """How the reverse SDE was sampled (``num_samples`` = K samples averaged into the mean image)."""

    name: str
    steps: int
    num_samples: int
    seed: int | None
    temperature: float = 1.0  # the noise scale (the model card's calibration chooses it; 1 = the plain sampler)

    @classmethod
    def of(cls, sampler: SamplerConfig) -> SamplerInfo:
        """What an output records of the sampler settings it was made with."""
        return cls(
            name=sampler.name,
            steps=sampler.steps,
            num_samples=sampler.num_samples,
            seed=sampler.seed,
            temperature=sampler.temperature,
        )


@dataclass(frozen=True)
class SynthesisProvenance:
    """How one synthetic PET was made: the model, the sampler and the run's circumstances."""

    model: ModelInfo
    sampler: SamplerInfo
    noise_key: str  # the image's name in the noise keys (seed, image, plane, slice, sample)
    reference_region: str
    wall_time_s: float
    planes: tuple[str, ...] = ("axial",)
    precision: str = "fp32"
    device: str = "cpu"  # CPU and CUDA draw different noise streams from the same seed
    subnormals_flushed: bool = False  # CPU arithmetic flushed subnormal floats to zero (bids_jdam.runtime.denormals)
    qc_failures: tuple[str, ...] = ()  # the input quality gate's failures (bids_jdam.preprocess.quality_gate)
    # Why each of the model card's calibrations applies to this run or not (bids_jdam.synthesis.sampling_plan).
    calibration_notes: tuple[tuple[str, str], ...] = ()
