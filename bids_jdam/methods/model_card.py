"""The model card as typed records, checked once when a model directory is loaded.

``model_card.json`` is what training, calibration and the Hub README write; a run reads it through
:class:`ModelCard` only, so a malformed record is one line naming the card before any image is preprocessed, and
no stage reads the card's raw dictionary again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from bids_jdam.config import SamplerConfig
from bids_jdam.data.atlas import DEFAULT_ATLAS
from bids_jdam.errors import InputError
from bids_jdam.methods.model_dir import PHANTOM_DATA

SINGLE_SAMPLE_SD = "single_sample_sd"  # the card's key of the single-sample error model
AD_PATTERN_INTERVAL = "ad_pattern_interval"  # the card's key of the AD-pattern score's interval
HEALTHY_REFERENCE = "healthy_reference"  # the card's key of the healthy-control reference's record


@dataclass(frozen=True)
class SpreadCalibration:
    """The posterior spread calibration (the card's ``calibration``), fitted on held-out subjects.

    It holds for what it was fitted with: one sampling plane (fusing planes shrinks the spread more than the
    error) and ``sampler`` with ``steps``; :func:`bids_jdam.synthesis.sampling_plan.plan_sampling` applies it only then.
    """

    spread_scale: float
    level: float
    num_samples: int
    voxels: int
    subjects: int
    fitted_on: str = "held-out validation subjects (split-conformal, brain mask)"
    sampler: str = ""
    steps: int = 0
    planes: int = 1
    temperature: float = 1.0
    crps_by_temperature: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fitted_for(self) -> tuple[str, int, int]:
        """(sampler, steps, planes) of the synthesis the calibration was fitted on."""
        return self.sampler, self.steps, self.planes

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> SpreadCalibration | None:
        """The card's record, checked; None where the card holds none (no ``spread_scale``)."""
        scale = data.get("spread_scale") if isinstance(data, Mapping) else None
        if scale is None:
            return None
        if not _number_in(scale, 0, float("inf"), upper_included=False):
            raise InputError(f"{where}: calibration.spread_scale must be a positive number, got {scale!r}")
        temperature = data.get("temperature", 1.0)
        if not _number_in(temperature, 0, 1, upper_included=True):
            raise InputError(f"{where}: calibration.temperature must be a number in (0, 1], got {temperature!r}")
        return _record(cls, data, where, "calibration")


@dataclass(frozen=True)
class FittedInterval:
    """A conformal interval's level and the synthesis it was fitted for (sampler, steps, K, planes) on how many
    held-out subjects: it holds for that synthesis only."""

    level: float
    sampler: str
    steps: int
    num_samples: int
    planes: int
    subjects: int

    @staticmethod
    def synthesis(sampler: SamplerConfig, planes: tuple[str, ...]) -> dict[str, Any]:
        """The record's fields that name a synthesis of ``sampler`` along ``planes``."""
        return {
            "sampler": sampler.name,
            "steps": sampler.steps,
            "num_samples": sampler.num_samples,
            "planes": len(planes),
        }

    def fitted_for(self) -> tuple[str, int, int, int]:
        """(sampler, steps, K, planes) of the synthesis the interval was fitted on."""
        return self.sampler, self.steps, self.num_samples, self.planes

    def reason_not_applied(self, sampler: SamplerConfig, planes: tuple[str, ...]) -> str | None:
        """None where a run synthesizes as the interval was fitted; else why the interval does not apply."""
        used = (sampler.name, sampler.steps, sampler.num_samples, len(planes))
        if self.fitted_for() == used:
            return None
        return (
            "the {} was fitted for sampler {}, {} steps, K = {}, {} plane(s); this run uses {}, {} steps, K = {}, "
            "{} plane(s)"
        ).format(self.what, *self.fitted_for(), *used)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: Path | str) -> FittedInterval:
        """The card's record, checked: a readable message naming ``where`` otherwise."""
        interval = _record(cls, data, where, cls.card_key, strict=True)
        if not (_number_in(interval.half_width, 0, float("inf")) and 0 < interval.level < 1):
            raise InputError(f"{where}: {cls.card_key} needs a positive half-width and a level in (0, 1)")
        return interval


@dataclass(frozen=True)
class RegionalInterval(FittedInterval):
    """The half-width of the regional ``level`` interval of SUVR (the card's ``regional_interval``)."""

    half_width_suvr: float = 0.0
    pairs: int = 0
    atlas: str = DEFAULT_ATLAS
    card_key: ClassVar[str] = "regional_interval"
    what: ClassVar[str] = "regional interval"

    @property
    def half_width(self) -> float:
        return self.half_width_suvr


@dataclass(frozen=True)
class PatternInterval(FittedInterval):
    """The half-width, in z, of the ``level`` interval of the AD-pattern score (the card's ``ad_pattern_interval``):
    one score per subject, so fitted on subjects, not regions."""

    half_width_z: float = 0.0
    reference_subjects: int = 0
    card_key: ClassVar[str] = AD_PATTERN_INTERVAL
    what: ClassVar[str] = "AD-pattern interval"

    @property
    def half_width(self) -> float:
        return self.half_width_z


@dataclass(frozen=True)
class ModelCard:
    """What a run needs from ``model_card.json``; ``record`` keeps the whole card for reports and the Hub README."""

    name: str
    method: str
    weights_sha256: str
    trained_on_phantoms: bool
    training_subjects: frozenset[str]
    training_dataset: str | None
    calibration: SpreadCalibration | None
    regional_interval: RegionalInterval | None
    pattern_interval: PatternInterval | None
    healthy_reference: Mapping[str, Any] | None  # the record of the files read by bids_jdam.data.healthy_reference
    single_sample_sd: Mapping[str, Any] | None
    calibration_note: str | None  # why the card holds no spread calibration, where it says
    record: Mapping[str, Any]

    def calibration_record(self) -> dict[str, Any] | None:
        """The spread calibration as the metrics and reports repeat it: the record, or its absence's reason."""
        if self.calibration is not None:
            return self.calibration.to_dict()
        return {"note": self.calibration_note} if self.calibration_note else None

    @classmethod
    def read(cls, card: Mapping[str, Any], where: Path, default_name: str, weights: str) -> ModelCard:
        """The typed card of ``card`` (read from ``where``); ``weights`` names the weights file in ``sha256``."""
        name = card.get("name", default_name)
        if not isinstance(name, str):
            raise InputError(f"{where}: name must be a string, got {name!r}")
        training = card.get("training_data", {})
        sd_model = card.get(SINGLE_SAMPLE_SD)
        calibration = card.get("calibration")
        note = calibration.get("note") if isinstance(calibration, Mapping) else None
        return cls(
            name=name,
            method=str(card["method"]),
            weights_sha256=card["sha256"][weights],
            trained_on_phantoms=card.get("trained_on") == PHANTOM_DATA,
            training_subjects=_training_subjects(training, where),
            training_dataset=training.get("dataset_identity") if isinstance(training, Mapping) else None,
            calibration=SpreadCalibration.from_dict(calibration, where),
            regional_interval=(
                RegionalInterval.from_dict(card["regional_interval"], where) if "regional_interval" in card else None
            ),
            pattern_interval=(
                PatternInterval.from_dict(card[AD_PATTERN_INTERVAL], where) if AD_PATTERN_INTERVAL in card else None
            ),
            healthy_reference=card.get(HEALTHY_REFERENCE) if isinstance(card.get(HEALTHY_REFERENCE), Mapping) else None,
            single_sample_sd=sd_model if isinstance(sd_model, Mapping) else None,
            calibration_note=str(note) if note else None,
            record=card,
        )


def _training_subjects(training: Any, where: Path) -> frozenset[str]:
    """The subject labels the model was trained on (``training_data.subjects.train``), checked for their types."""
    subjects = training.get("subjects", {}) if isinstance(training, Mapping) else None
    train = subjects.get("train", {}) if isinstance(subjects, Mapping) else None
    if not isinstance(train, (dict, list)):
        raise InputError(f"{where}: training_data.subjects.train must list subject labels")
    return frozenset(str(subject) for subject in train)


def _number_in(value: Any, low: float, high: float, upper_included: bool = False) -> bool:
    """A real number (not a bool) in (low, high) or (low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return low < value <= high if upper_included else low < value < high


def _record(cls: type, data: Any, where: Path | str, key: str, strict: bool = False) -> Any:
    """``cls`` from the card's dictionary ``data``; unknown keys are kept out unless ``strict``."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: {key} must be a record, got {data!r}")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**(dict(data) if strict else {k: v for k, v in data.items() if k in known}))
    except TypeError as error:
        raise InputError(f"{where}: {key} is not a valid record ({error})") from None
