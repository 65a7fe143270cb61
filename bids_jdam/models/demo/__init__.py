"""The packaged demo model: a small residual JDAM (the default method) trained on phantom subjects (not for real
patients).

The files beside this module are a model directory (``weights.safetensors`` in fp16, ``config.json``,
``model_card.json``, the healthy-control reference ``healthy_reference.nii.gz`` and ``.tsv``), made by
``benchmarks/train_demo.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bids_jdam.config import JDAMConfig

DEMO_MODEL_DIR = Path(__file__).resolve().parent


def demo_model_available() -> bool:
    return (DEMO_MODEL_DIR / "weights.safetensors").is_file() and (DEMO_MODEL_DIR / "config.json").is_file()


def demo_model_config() -> JDAMConfig:
    """The demo model's configuration (its grid decides the phantom the demo makes)."""
    if demo_model_available():
        data = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
        data.pop("method", None)  # a model directory's config also names its method
        return JDAMConfig.from_dict(data)
    from bids_jdam.config import small_config

    return small_config()
