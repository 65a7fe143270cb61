"""Input quality gate: phantom-like measures pass, broken inputs fail with reasons, and failed-qc is never "ok"."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_jdam.bids.query import AnatInput
from bids_jdam.bids.sidecars import pet_sidecar
from bids_jdam.evaluate.participant_metrics import BrainExtractionCheck, ParticipantMetrics, RegistrationCheck
from bids_jdam.preprocess import quality_gate
from bids_jdam.preprocess.quality_gate import QualityMeasures
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo, SynthesisProvenance


def test_phantom_measures_pass_and_broken_inputs_fail():
    # Lowest phantom values and the uniform-noise input of docs/quality_gates.md.
    assert quality_gate.failures(QualityMeasures(0.73, 0.956, 1844.0)) == []
    noise = quality_gate.failures(QualityMeasures(-0.013, 0.283, 2139.0))
    assert len(noise) == 2 and "registration correlation" in noise[0] and "Dice" in noise[1]
    assert "brain volume 3 ml" in quality_gate.failures(QualityMeasures(0.9, 0.9, 2.6))[0]
    assert len(quality_gate.failures(QualityMeasures(math.nan, math.nan, math.nan))) == 3  # NaN never passes


def test_measure_uses_the_affine_for_the_brain_volume():
    template = np.zeros((10, 10, 10), np.float32)
    template[2:8, 2:8, 2:8] = np.linspace(0, 1, 216).reshape(6, 6, 6)
    mask = template > 0
    native = nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    native.header["pixdim"][1:4] = 1.0  # the header disagrees; the affine counts
    measures = quality_gate.measure(template, mask, template, mask, native)
    assert measures.registration_correlation == pytest.approx(1.0) and measures.mask_dice == 1.0
    assert measures.brain_volume_ml == pytest.approx(1000 * 8 / 1000)  # 1000 voxels of 8 mm3
    constant = quality_gate.measure(np.ones_like(template), mask, template, mask, native)
    assert math.isnan(constant.registration_correlation)


def test_failed_qc_is_written_in_sidecars_and_metrics(tmp_path: Path):
    anat = AnatInput(
        path=Path("x"),
        relative_path="sub-01/anat/sub-01_T1w.nii.gz",
        subject="01",
        session=None,
        run=None,
        acquisition=None,
        suffix="T1w",
        entities={"sub": "01"},
        metadata={},
        field_strength=None,
    )
    reasons = ("registration correlation with the template 0.13 < 0.5",)
    model, sampler = ModelInfo("m", "0" * 64, True), SamplerInfo("heun", 2, 1, 0)
    provenance = SynthesisProvenance(model, sampler, "sub-01", "pons", 1.0, qc_failures=reasons)
    sidecar = pet_sidecar(anat, provenance, space="T1w")
    assert sidecar["QCStatus"] == "failed-qc" and sidecar["QCFailures"] == list(reasons)
    assert "FAILED the input quality gate" in sidecar["Description"]
    ok = pet_sidecar(anat, SynthesisProvenance(model, sampler, "sub-01", "pons", 1.0), space="T1w")
    assert ok["QCStatus"] == "ok" and "QCFailures" not in ok
    written = ParticipantMetrics(
        participant_id="01",
        session=None,
        run=None,
        field_strength=None,
        model=model,
        sampler=sampler,
        quality=None,
        in_training_set=None,
        noise_index=1.0,
        regional_suvr_synthetic={},
        regional_suvr_real=None,
        brain_volume_ml=1500.0,
        registration=RegistrationCheck(0.13),
        brain_extraction=BrainExtractionCheck(0.95),
        status="failed-qc",
        qc_failures=list(reasons),
    )
    read = ParticipantMetrics.from_json(written.to_json(tmp_path / "m.json"))
    assert read.status == "failed-qc" and read.qc_failures == list(reasons)
