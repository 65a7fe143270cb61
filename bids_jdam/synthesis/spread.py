"""The posterior spread calibration applied at synthesis: samples spread around their mean by one fitted scale, and
the prediction interval of their mean that the scale is fitted for."""

from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t


def inflate(samples: np.ndarray, scale: float) -> np.ndarray:
    """The samples spread by ``scale`` around their mean (K, *shape): mean unchanged, SD times ``scale``.

    ``scale`` is the model card's ``calibration.spread_scale`` (:mod:`bids_jdam.evaluate.calibration`).
    """
    samples = np.asarray(samples)
    mean = samples.mean(axis=0, keepdims=True)
    return (mean + scale * (samples - mean)).astype(samples.dtype)


def interval_half_width_in_sd(num_samples: int, level: float) -> float:
    """Half-width, in SDs of K samples, of the central ``level`` prediction interval around their mean: a new
    draw deviates from the mean with SD x sqrt(1 + 1/K), and K - 1 degrees of freedom give Student-t quantiles."""
    if num_samples < 2:
        raise ValueError("a prediction interval from the samples' SD needs 2 or more samples")
    return float(student_t.ppf(0.5 + level / 2, num_samples - 1) * np.sqrt(1 + 1 / num_samples))
