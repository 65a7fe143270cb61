"""The metrics JSON written beside each synthetic PET: what the participant report shows and the group level reads.

One file per image, ``sub-X/figures/<stem>_desc-jdam_metrics.json``. The group level reads nothing else, so
everything a group table needs is here. Non-finite numbers are written as JSON ``null``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_jdam.errors import InputError
from bids_jdam.evaluate.ad_pattern import PatternScore
from bids_jdam.io import atomic
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo

METRICS_SUFFIX = "_desc-jdam_metrics.json"


@dataclass
class QualityMetrics:
    """Synthetic vs real PET in SUVR inside the brain mask (protocol in :mod:`bids_jdam.evaluate.metrics`)."""

    psnr: float
    ssim: float
    mae: float
    nmse: float
    # Does an SD map say where the error is large? (Pearson, after smoothing at PET resolution.) The sampling SD
    # exists with K > 1 samples, the view SD with more than one plane.
    sd_error_correlation: float | None = None
    view_sd_error_correlation: float | None = None
    # Does the calibrated SD map hold on this participant? Coverage of the central 50 % and 90 % intervals and the
    # spread-skill ratio (:mod:`bids_jdam.evaluate.probabilistic`; nominal 0.5, 0.9 and 1); only with K > 1.
    coverage_50: float | None = None
    coverage_90: float | None = None
    spread_skill: float | None = None
    # Does the sampling SD map rank the error (:mod:`bids_jdam.evaluate.error_ranking`)? AUSE over a random
    # ranking's (1: no ranking, lower is better) and the map's CRPS over that of the constant-width band with the
    # same 90 % coverage (below 1: the map says where the error is); only with K > 1.
    sd_ause_relative: float | None = None
    crps_over_constant_band: float | None = None
    # The T1w-space output against the real PET co-registered to the T1w, inside the native brain mask: what a
    # user compares (the template-space scores above also carry the registration's resampling).
    native_psnr: float | None = None
    native_ssim: float | None = None
    native_mae: float | None = None


@dataclass
class RegistrationCheck:
    """Correlation of the registered T1w with the template T1 inside the template brain mask."""

    correlation_with_template: float


@dataclass
class BrainExtractionCheck:
    """Dice overlap of the subject's brain mask (in template space) with the template brain mask."""

    dice_with_template_mask: float


@dataclass
class ParticipantMetrics:
    """Everything measured for one synthesized image.

    ``participant_id`` carries the ``sub-`` prefix (as in participants.tsv); ``session`` and ``run`` are bare
    labels (``"A"``, ``"1"``) or None. ``quality`` and ``regional_suvr_real`` exist only when a real PET was given.
    ``model_calibration`` is the model card's ``calibration`` record as is (the fields of
    :class:`bids_jdam.methods.model_card.SpreadCalibration`, or ``{"note": ...}``; None for a card without one),
    so that the reports can say on how many subjects the spread scale was fitted.
    """

    participant_id: str
    session: str | None
    run: str | None
    field_strength: float | None
    model: ModelInfo
    sampler: SamplerInfo
    quality: QualityMetrics | None
    in_training_set: bool | None
    noise_index: float
    regional_suvr_synthetic: dict[str, float]
    regional_suvr_real: dict[str, float] | None
    brain_volume_ml: float
    registration: RegistrationCheck
    brain_extraction: BrainExtractionCheck
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    status: str = "ok"  # or "failed-qc": the input quality gate's reasons are in qc_failures
    qc_failures: list[str] = field(default_factory=list)
    input_voxel_size_mm: list[float] | None = None
    grid_spacing_mm: float | None = None
    model_calibration: dict[str, Any] | None = None
    ad_pattern: PatternScore | None = None  # where the model has a healthy-control reference

    def __post_init__(self) -> None:
        if not self.participant_id.startswith("sub-"):
            self.participant_id = f"sub-{self.participant_id}"
        if self.session is not None:
            self.session = self.session.removeprefix("ses-")
        if self.run is not None:
            self.run = str(self.run).removeprefix("run-")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN and infinities become None."""
        return _finite_or_none(dataclasses.asdict(self))

    def to_json(self, path: Path) -> Path:
        """Write the metrics to ``path`` atomically."""
        return atomic.write_text(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParticipantMetrics:
        """Build from a dict as written by :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        quality = data.get("quality")
        real = data.get("regional_suvr_real")
        return cls(
            participant_id=str(data["participant_id"]),
            session=_optional_str(data.get("session")),
            run=_optional_str(data.get("run")),
            field_strength=_optional_float(data.get("field_strength")),
            model=ModelInfo(
                name=str(data["model"]["name"]),
                sha256=str(data["model"]["sha256"]),
                trained_on_phantoms=bool(data["model"]["trained_on_phantoms"]),
                method=str(data["model"].get("method", "jdam")),
                probabilistic=bool(data["model"].get("probabilistic", True)),
                spread_scale=_optional_float(data["model"].get("spread_scale")),
            ),
            sampler=SamplerInfo(
                name=str(data["sampler"]["name"]),
                steps=int(data["sampler"]["steps"]),
                num_samples=int(data["sampler"]["num_samples"]),
                seed=None if data["sampler"].get("seed") is None else int(data["sampler"]["seed"]),
                temperature=float(data["sampler"].get("temperature", 1.0)),
            ),
            quality=None if quality is None else _quality(quality),
            in_training_set=None if data.get("in_training_set") is None else bool(data["in_training_set"]),
            noise_index=_float(data["noise_index"]),
            regional_suvr_synthetic={str(k): _float(v) for k, v in data["regional_suvr_synthetic"].items()},
            regional_suvr_real=None if real is None else {str(k): _float(v) for k, v in real.items()},
            brain_volume_ml=_float(data["brain_volume_ml"]),
            registration=RegistrationCheck(_float(data["registration"]["correlation_with_template"])),
            brain_extraction=BrainExtractionCheck(_float(data["brain_extraction"]["dice_with_template_mask"])),
            timings={str(k): _float(v) for k, v in data.get("timings", {}).items()},
            warnings=[str(w) for w in data.get("warnings", [])],
            versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
            status=str(data.get("status", "ok")),
            qc_failures=[str(f) for f in data.get("qc_failures", [])],
            input_voxel_size_mm=None
            if data.get("input_voxel_size_mm") is None
            else [float(v) for v in data["input_voxel_size_mm"]],
            grid_spacing_mm=_optional_float(data.get("grid_spacing_mm")),
            model_calibration=_optional_dict(data.get("model_calibration")),
            ad_pattern=None if data.get("ad_pattern") is None else PatternScore(**data["ad_pattern"]),
        )

    @classmethod
    def from_json(cls, path: Path) -> ParticipantMetrics:
        """Read a metrics JSON; a missing, corrupt or incomplete file raises InputError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except OSError as exc:
            raise InputError(f"{path}: cannot read the metrics file ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        except KeyError as exc:
            raise InputError(f"{path}: the metrics file lacks the key {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path}: a metrics value has the wrong type ({exc})") from exc


def _quality(data: dict[str, Any]) -> QualityMetrics:
    """The scores every writer wrote are required; those with a default may be absent (files of older writers)."""
    return QualityMetrics(
        **{
            f.name: _float(data[f.name]) if f.default is dataclasses.MISSING else _optional_float(data.get(f.name))
            for f in dataclasses.fields(QualityMetrics)
        }
    )


def _float(value: Any) -> float:
    """JSON null stands for a non-finite number."""
    return math.nan if value is None else float(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_dict(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value
