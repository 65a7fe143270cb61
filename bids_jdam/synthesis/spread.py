"""The posterior spread calibration applied at synthesis: samples spread around their mean by one fitted scale."""

from __future__ import annotations

import numpy as np


def inflate(samples: np.ndarray, scale: float) -> np.ndarray:
    """The samples spread by ``scale`` around their mean (K, *shape): mean unchanged, SD times ``scale``.

    ``scale`` is the model card's ``calibration.spread_scale`` (:mod:`bids_jdam.evaluate.calibration`).
    """
    samples = np.asarray(samples)
    mean = samples.mean(axis=0, keepdims=True)
    return (mean + scale * (samples - mean)).astype(samples.dtype)
