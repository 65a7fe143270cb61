"""The group level's outlier rule: which images stand out from the others on a measure.

For each measure, the modified z-score of Iglewicz and Hoaglin, ``0.6745 (x - median) / MAD``; an image is flagged
when ``|z| > 3.5`` on any measure. Measures are compared across all images, or within each group of a column (the
group level compares regional SUVR within each diagnosis group, so that AD hypometabolism is not called an outlier
against CN). When over half the values are equal (MAD = 0) the scale is 1.2533 times the mean absolute deviation
instead. A measure is skipped in a group of fewer than five images or when all its values are equal.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

OUTLIER_Z = 3.5
MIN_IMAGES_FOR_OUTLIERS = 5


def flag_outliers(
    table: pd.DataFrame, measures: Sequence[str], *, within: str | None = None, within_measures: Collection[str] = ()
) -> None:
    """Add ``outlier`` (bool) and ``outlier_measures`` (comma-separated) columns to ``table`` in place.

    Each of ``measures`` is compared across all rows, except ``within_measures``, which are compared within each
    group of the column ``within`` when that column has any value.
    """
    flagged: list[list[str]] = [[] for _ in range(len(table))]
    by = within if within is not None and table[within].notna().any() else None
    for column in measures:
        for _, rows in groups_by(table, by if column in within_measures else None):
            values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
            for position in np.flatnonzero(robust_outliers(values)):
                flagged[table.index.get_loc(rows.index[position])].append(column)
    table["outlier"] = [bool(names) for names in flagged]
    table["outlier_measures"] = [",".join(names) for names in flagged]


def robust_outliers(values: np.ndarray) -> np.ndarray:
    """True where the modified z-score exceeds the limit; all False when the rule cannot be applied."""
    finite = values[np.isfinite(values)]
    if finite.size < MIN_IMAGES_FOR_OUTLIERS:
        return np.zeros(values.shape, dtype=bool)
    median = np.median(finite)
    deviations = np.abs(finite - median)
    scale = np.median(deviations) / 0.6745
    if scale == 0:  # over half the values are equal: Iglewicz and Hoaglin's fallback on the mean absolute deviation
        scale = 1.253314 * np.mean(deviations)
    if scale == 0:
        return np.zeros(values.shape, dtype=bool)
    return np.abs(np.nan_to_num((values - median) / scale)) > OUTLIER_Z


def groups_by(table: pd.DataFrame, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """The rows of each value of column ``by`` (missing values as ``n/a``), sorted; all rows when ``by`` is None."""
    if by is None:
        return [("all", table)]
    keys = table[by].map(lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return [(key, table[keys == key]) for key in sorted(keys.unique())]
