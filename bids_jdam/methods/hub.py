"""Model directories on the Hugging Face Hub, named ``hf:ORG/NAME[@REVISION]``.

The download goes through ``huggingface_hub.snapshot_download`` so that the Hub's own cache and settings apply as
for any Hub client (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``, ``HF_ENDPOINT``). What it
returns is a plain model directory: the caller checks it exactly like a local one
(:func:`bids_jdam.methods.model_dir.load_model_dir`). Every failure becomes one :class:`InputError` line that names
the reference and what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from bids_jdam.errors import InputError, one_line

HUB_PREFIX = "hf:"
REPO_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_reference(model: str) -> bool:
    """Whether a ``--model`` value names a Hub model rather than a local directory."""
    return model.startswith(HUB_PREFIX)


@dataclass(frozen=True)
class HubReference:
    """A model repository and, optionally, the branch, tag or commit to use (None: the repository's main)."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, model: str) -> HubReference:
        """``hf:ORG/NAME`` or ``hf:ORG/NAME@REVISION``; anything else is a usage error naming the expected form."""
        repo_id, at, revision = model.removeprefix(HUB_PREFIX).partition("@")
        if not REPO_ID_PATTERN.fullmatch(repo_id) or (at and not revision):
            raise InputError(f"{model}: a Hub model is hf:ORG/NAME or hf:ORG/NAME@REVISION (a branch, tag or commit)")
        return cls(repo_id, revision or None)

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HubSnapshot:
    """A Hub model fetched into the cache: the directory to load and the commit it holds."""

    reference: HubReference
    commit: str
    path: Path

    @property
    def pinned(self) -> str:
        """The reference pinned to the fetched commit, so that a second load gets the very same files."""
        return str(HubReference(self.reference.repo_id, self.commit))


def fetch_hub_model(model: str, cache_dir: Path | None = None) -> HubSnapshot:
    """The snapshot of ``model`` (``hf:ORG/NAME[@REVISION]``) in the Hub cache, downloaded where it is missing."""
    reference = HubReference.parse(model)
    try:
        path = Path(snapshot_download(reference.repo_id, revision=reference.revision, cache_dir=cache_dir))
    except Exception as error:  # noqa: BLE001 - the HTTP client's own errors (connection, proxy) have no public base
        raise InputError(_failure(reference, error, cache_dir)) from None
    return HubSnapshot(reference, commit=path.name, path=path)


def _failure(reference: HubReference, error: Exception, cache_dir: Path | None) -> str:
    """One line naming the reference, what went wrong and what to do."""
    cache = cache_dir or constants.HF_HUB_CACHE
    if isinstance(error, RevisionNotFoundError):
        return (
            f"{reference}: no revision '{reference.revision}' in {reference.repo_id} on the Hugging Face Hub; "
            "name a branch, tag or commit hash that exists"
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"{reference}: no model repository {reference.repo_id} on the Hugging Face Hub, or it is private or "
            "gated; check the name, or log in (`hf auth login` or HF_TOKEN) with an account that has access"
        )
    if isinstance(error, HFValidationError):
        return f"{reference}: not a valid Hugging Face repository id or revision ({one_line(error)})"
    if isinstance(error, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE:
        return (
            f"{reference}: not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set; download it once "
            "with network access (unset HF_HUB_OFFLINE), or point HF_HUB_CACHE at a cache that holds it"
        )
    if isinstance(error, LocalEntryNotFoundError):
        return (
            f"{reference}: the Hugging Face Hub cannot be reached and the model is not (completely) in the cache "
            f"{cache}; check the network connection (or HF_ENDPOINT) and retry"
        )
    if isinstance(error, HfHubHTTPError):
        return f"{reference}: the Hugging Face Hub refused the download ({one_line(error)}); retry later"
    return (
        f"{reference}: download from the Hugging Face Hub failed ({type(error).__name__}: {one_line(error)}); "
        "check the network connection and retry"
    )
