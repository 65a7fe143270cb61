"""Statistics of the quality benchmark over subjects: mean with a t-interval, paired Wilcoxon tests, paired gaps.

The unit of analysis is the subject (its metric = the mean over its evaluated slices), never the slice: slices of
one brain are not independent, and counting them would shrink every interval.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """Two-sided Student-t confidence interval of the mean; None for fewer than two finite values."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2 or not np.all(np.isfinite(data)):
        return None
    half = stats.t.ppf(0.5 + confidence / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return [float(data.mean() - half), float(data.mean() + half)]


def summarize(per_subject: dict[str, float]) -> dict[str, object]:
    """Mean, standard deviation and 95% t-interval over subjects, with the per-subject values."""
    values = list(per_subject.values())
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "ci95": t_interval(values),
        "n_subjects": len(values),
        "per_subject": dict(per_subject),
    }


def paired_comparison(method: dict[str, float], baseline: dict[str, float]) -> dict[str, object]:
    """Method minus baseline on the subjects both have: mean difference, its t-interval, two-sided Wilcoxon test.

    ``scipy.stats.wilcoxon`` on the paired per-subject values (exact p-value for small samples without ties).
    When every difference is zero the test is undefined and ``p_value`` is None.
    """
    subjects = sorted(set(method) & set(baseline))
    differences = np.array([method[s] - baseline[s] for s in subjects], dtype=np.float64)
    result: dict[str, object] = {
        "n_subjects": len(subjects),
        "mean_difference": float(differences.mean()) if len(subjects) else None,
        "ci95_difference": t_interval(list(differences)),
        "subjects_above_baseline": int(np.sum(differences > 0)),
        "wilcoxon_statistic": None,
        "p_value": None,
    }
    if len(subjects) and np.any(differences != 0):
        test = stats.wilcoxon([method[s] for s in subjects], [baseline[s] for s in subjects])
        result["wilcoxon_statistic"] = float(test.statistic)
        result["p_value"] = float(test.pvalue)
    return result
