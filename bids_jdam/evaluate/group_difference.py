"""A difference of group means with its confidence interval: AD minus CN regional SUVR across participants.

Welch's t interval (unequal variances): the between-subject spread of the synthetic values already holds each
image's synthesis error, so this interval covers sampling and synthesis together, for subjects like these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.9
MIN_PER_GROUP = 2


@dataclass(frozen=True)
class GroupDifference:
    """Mean of ``group`` minus mean of ``baseline``, the bounds of its ``LEVEL`` interval, and the group sizes."""

    difference: float
    lower: float
    upper: float
    n_group: int
    n_baseline: int


def group_difference(group: np.ndarray, baseline: np.ndarray, level: float = LEVEL) -> GroupDifference | None:
    """Welch's difference of the finite values of ``group`` and ``baseline``; None with fewer than two in either."""
    group, baseline = (np.asarray(v, dtype=float) for v in (group, baseline))
    group, baseline = group[np.isfinite(group)], baseline[np.isfinite(baseline)]
    if min(len(group), len(baseline)) < MIN_PER_GROUP:
        return None
    result = stats.ttest_ind(group, baseline, equal_var=False)
    interval = result.confidence_interval(confidence_level=level)
    lower, upper = float(interval.low), float(interval.high)
    difference = float(group.mean() - baseline.mean())
    if not (math.isfinite(lower) and math.isfinite(upper)):  # no spread in either group: the difference is exact
        lower = upper = difference
    return GroupDifference(difference, lower, upper, len(group), len(baseline))
