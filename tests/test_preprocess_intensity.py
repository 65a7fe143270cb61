"""Model units: percentile-scaled T1w independent of the scanner's gain; SUVR against each reference region."""

from __future__ import annotations

import numpy as np
import pytest

from bids_jdam.data.regions import coarse_regions
from bids_jdam.data.template import load_template
from bids_jdam.preprocess.intensity import reference_mask, scale_t1w, suvr


def test_t1w_scaling_is_independent_of_scanner_gain():
    template = load_template(4.0)
    brain = template.brain_mask
    t1 = template.t1 * 800.0
    scaled, scale = scale_t1w(t1, brain, 99.0)
    again, scale_7t = scale_t1w(t1 * 3.7, brain, 99.0)  # a different receive gain, as between 3 T and 7 T
    assert np.allclose(scaled, again, atol=1e-6) and scale_7t == pytest.approx(3.7 * scale)
    assert scaled.max() == pytest.approx(1.0) and (scaled[~brain] == 0).all()
    assert (scaled[brain] >= 0.99).mean() == pytest.approx(0.01, abs=0.01)


@pytest.mark.parametrize(
    "reference, names", [("cerebellum+pons", {"cerebellum", "pons"}), ("pons", {"pons"}), ("wholebrain", None)]
)
def test_suvr_divides_by_the_reference_mean(reference, names):
    labels, label_names = coarse_regions(4.0)
    brain = load_template(4.0).brain_mask
    ref = reference_mask(reference, brain, labels, label_names)
    if names is None:
        assert (ref == brain).all()
    else:
        ids = [k for k, v in label_names.items() if v in names]
        assert ref.any() and np.isin(labels[ref], ids).all()
    pet = np.where(ref, 5000.0, 9000.0).astype(np.float32)
    values, factor = suvr(pet, ref, brain)
    assert factor == pytest.approx(pet[ref].mean())
    assert values[ref].mean() == pytest.approx(1.0) and (values[~brain] == 0).all()


def test_unknown_reference_is_an_error():
    labels, names = coarse_regions(4.0)
    with pytest.raises(ValueError, match="unknown SUVR reference"):
        reference_mask("liver", load_template(4.0).brain_mask, labels, names)
