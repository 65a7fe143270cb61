"""The README.md of a model directory: a Hugging Face Hub model card, so that the directory can be uploaded as it is.

It is rendered from the JSON model card (template ``hub_model_card.md.j2`` beside this module) for people to read;
bids-jdam never reads it back, and the weights' checksums do not cover it (the Hub lets owners edit a model card in
place).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from bids_jdam.config import JDAMConfig
from bids_jdam.methods import Method

README = "README.md"
TEMPLATE = "hub_model_card.md.j2"
BASE_TAGS = ("medical-imaging", "pet", "mri", "fdg-pet", "bids")


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("bids_jdam", "methods"),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )


def render_readme(name: str, card: dict[str, Any], cfg: JDAMConfig, method: Method, warning: str | None) -> str:
    """The model card text; ``warning`` (for a phantom-trained model) heads it and tags it."""
    tags = [*BASE_TAGS, "diffusion" if method.probabilistic else "image-to-image", method.name]
    if warning:
        tags.append("synthetic-phantoms")
    training = card.get("training_data", {})
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            name=name,
            card=card,
            cfg=cfg,
            method=method,
            warning=warning,
            tags=tags,
            subjects=training.get("subjects") if isinstance(training, dict) else None,
            validation=card.get("validation") or {"note": "no held-out subjects"},
        )
    )
