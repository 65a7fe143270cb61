"""QC reports: participant HTML (self-contained, phantom banner, spread calibration), group TSV/HTML (rows,
missing list, AD < CN, coverage per image and per model)."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_jdam.data.regions import coarse_regions, region_mask
from bids_jdam.data.template import load_template
from bids_jdam.errors import InputError
from bids_jdam.evaluate.participant_metrics import (
    BrainExtractionCheck,
    ParticipantMetrics,
    QualityMetrics,
    RegistrationCheck,
)
from bids_jdam.evaluate.regional import regional_means
from bids_jdam.reports.group import run_group_level
from bids_jdam.reports.participant import ReportEntry, metrics_json_path, write_participant_report
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo

SPACING = 4.0
# (subject, session, diagnosis); sub-05 is in participants.tsv but has no outputs.
IMAGES = [
    ("01", "A", "CN"),
    ("01", "B", "CN"),
    ("02", None, "CN"),
    ("03", None, "AD"),
    ("04", "A", "AD"),
    ("04", "B", "AD"),
]
DIAGNOSES = {"01": "CN", "02": "CN", "03": "AD", "04": "AD", "05": "CN"}
# sub-03's model has a fitted spread calibration; the others' card says why not (with characters HTML must escape).
CALIBRATION = {
    "spread_scale": 1.7,
    "level": 0.9,
    "num_samples": 4,
    "voxels": 5000,
    "subjects": 3,
    "fitted_on": "3 held-out validation subjects (split-conformal, brain mask, pc sampler)",
}
NOT_CALIBRATED = {"note": "not calibrated: <no held-out subjects>"}


def spread_scores(subject: str, session: str | None) -> dict[str, float]:
    """Coverage and spread-skill of the images with an SD map (not session B), known per subject."""
    if session == "B":
        return {}
    return {"coverage_50": 0.5, "coverage_90": 0.8 + 0.02 * int(subject), "spread_skill": 0.1 * (6 + int(subject))}


def fake_pet(diagnosis: str, seed: int) -> np.ndarray:
    """A PET-like SUVR volume from the template's tissue maps; AD lowers parietal and precuneus uptake by 25 %."""
    template = load_template(SPACING)
    pet = (1.6 * template.gm + 0.6 * template.wm) * template.brain_mask
    if diagnosis == "AD":
        hypometabolic = region_mask(SPACING, "parietal+precuneus_posterior_cingulate")
        pet = np.where(hypometabolic, 0.75 * pet, pet)
    noise = np.random.default_rng(seed).normal(0.0, 0.03, pet.shape) * template.brain_mask
    return (pet + noise).astype(np.float32)


def fake_metrics(
    subject: str, session: str | None, synthetic: np.ndarray, real: np.ndarray | None, phantom_model: bool
) -> ParticipantMetrics:
    labels, names = coarse_regions(SPACING)
    calibrated = subject == "03"
    return ParticipantMetrics(
        participant_id=subject,
        session=session,
        run=None,
        field_strength=3.0 if subject != "04" else 1.5,
        model=ModelInfo(
            name="demo",
            sha256="ab" * 32,
            trained_on_phantoms=phantom_model,
            spread_scale=CALIBRATION["spread_scale"] if calibrated else None,
        ),
        sampler=SamplerInfo(name="pc", steps=10, num_samples=2, seed=0),
        quality=None
        if real is None
        else QualityMetrics(
            psnr=30.0,
            ssim=0.9,
            mae=0.05,
            nmse=0.01,
            sd_error_correlation=0.1 * int(subject),
            view_sd_error_correlation=-0.05 * int(subject),
            **spread_scores(subject, session),
        ),
        in_training_set=False if real is not None else None,
        noise_index=12.0 + int(subject),
        regional_suvr_synthetic=regional_means(synthetic, labels, names),
        regional_suvr_real=None if real is None else regional_means(real, labels, names),
        brain_volume_ml=1200.0 + int(subject),
        registration=RegistrationCheck(0.9),
        brain_extraction=BrainExtractionCheck(0.95),
        timings={"preprocess": 12.5, "synthesis": 40.0},
        warnings=["PET frames were averaged"] if subject == "01" else [],
        versions={"bids-jdam": "0.1", "torch": "2.x"},
        input_voxel_size_mm=[1.0, 1.0, 1.2],
        grid_spacing_mm=SPACING,
        model_calibration=CALIBRATION if calibrated else NOT_CALIBRATED,
    )


@pytest.fixture(scope="module")
def derivatives(tmp_path_factory) -> tuple[Path, Path]:
    """Fake participant-level outputs for 4 participants (6 images), a dataset listing a 5th, and the group level."""
    root = tmp_path_factory.mktemp("reports")
    bids_dir, out_dir = root / "bids", root / "out"
    bids_dir.mkdir()
    rows = "".join(f"sub-{s}\t{d}\n" for s, d in DIAGNOSES.items())
    (bids_dir / "participants.tsv").write_text("participant_id\tdiagnosis\n" + rows)
    template = load_template(SPACING)
    mask_img = template.image(template.brain_mask, dtype=np.uint8)
    entries: dict[str, list[ReportEntry]] = {}
    for seed, (subject, session, diagnosis) in enumerate(IMAGES):
        real = fake_pet(diagnosis, seed + 100)
        synthetic = fake_pet(diagnosis, seed)
        has_real = subject in ("01", "03", "04")
        metrics = fake_metrics(subject, session, synthetic, real if has_real else None, phantom_model=subject == "01")
        stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        entries.setdefault(subject, []).append(
            ReportEntry(
                stem=stem,
                t1w=template.image(template.t1),
                brain_mask=mask_img,
                template_t1=template.image(template.t1),
                synthetic_pet=template.image(synthetic),
                std_map=template.image(np.abs(synthetic - real)) if session != "B" else None,
                real_pet=template.image(real) if has_real else None,
                metrics=metrics,
                view_std_map=template.image(np.abs(synthetic - real)) if session == "A" else None,
            )
        )
    for subject in ("01", "03"):  # full reports for two subjects; metrics JSON only for the rest (group input)
        write_participant_report(out_dir, subject, entries[subject])
    for subject in ("02", "04"):
        for entry in entries[subject]:
            entry.metrics.to_json(metrics_json_path(out_dir, entry.stem))
    assert run_group_level(out_dir, bids_dir) == (out_dir / "group_metrics.tsv", out_dir / "group_report.html", [])
    return bids_dir, out_dir


def test_participant_report_is_self_contained_with_banner(derivatives):
    _, out_dir = derivatives
    report = (out_dir / "sub-01.html").read_text()
    assert "trained on synthetic phantoms" in report.lower()
    assert "sub-01_ses-A" in report and "sub-01_ses-B" in report
    sources = re.findall(r'(?:src|href)="([^"]*)"', report)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert report.count("<img") >= 15  # per image: mask, registration, 3 planes, regional (+ uncertainty, real, error)
    figures = sorted(p.name for p in (out_dir / "sub-01" / "figures").iterdir())
    assert "sub-01_ses-A_desc-error_pet.png" in figures and "sub-01_ses-B_desc-synthaxial_pet.png" in figures
    assert "sub-01_ses-B_desc-uncertainty_pet.png" not in figures  # K = 1 there: no std map
    assert "sub-01_ses-A_desc-viewuncertainty_pet.png" in figures  # several planes there: the view SD map
    assert "sub-01_ses-B_desc-viewuncertainty_pet.png" not in figures
    assert "where the 2D views of the same brain disagree" in report
    assert not any(name.startswith(".tmp-") for name in figures)


def test_participant_report_without_phantom_model_has_no_banner(derivatives):
    _, out_dir = derivatives
    report = (out_dir / "sub-03.html").read_text()
    assert "trained on synthetic phantoms" not in report.lower()
    assert "PSNR" in report and "field strength" in report and "torch" in report


def test_participant_report_states_the_spread_calibration_and_its_coverage(derivatives):
    _, out_dir = derivatives
    calibrated = html.unescape((out_dir / "sub-03.html").read_text())
    assert (
        "spread calibrated: scale 1.7 fitted on 3 held-out subjects (level 90 %, K = 4 samples); "
        "here K = 2, so the coverage may differ"
    ) in calibrated
    assert "NOT calibrated" not in calibrated
    rows = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", (out_dir / "sub-03.html").read_text()))
    assert rows["sampling spread: coverage of the central 50 % interval (nominal 0.50)"] == "0.5"
    assert rows["sampling spread: coverage of the central 90 % interval (nominal 0.90)"] == "0.86"
    assert (
        rows["sampling spread: spread-skill ratio (nominal 1.0; below 1 the SD map is too small for the error)"]
        == "0.9"
    )
    raw = (out_dir / "sub-01.html").read_text()
    assert "spread NOT calibrated: the SD map is likely too small (not calibrated: &lt;no held-out subjects&gt;)" in raw
    assert "<no held-out subjects>" not in raw
    ses_b = raw.split('<section id="sub-01_ses-B">', 1)[1]
    assert "coverage of the central" not in ses_b  # no SD map there: nothing measured


def test_metrics_json_round_trip(derivatives):
    _, out_dir = derivatives
    path = out_dir / "sub-01" / "figures" / "sub-01_ses-A_desc-jdam_metrics.json"
    metrics = ParticipantMetrics.from_json(path)
    assert (metrics.participant_id, metrics.session, metrics.model.trained_on_phantoms) == ("sub-01", "A", True)
    assert metrics.quality is not None and metrics.quality.psnr == 30.0
    assert set(metrics.regional_suvr_synthetic) >= {"parietal", "frontal", "cerebellum", "pons"}


def test_unreadable_metrics_json_names_the_file(tmp_path):
    path = tmp_path / "sub-09_desc-jdam_metrics.json"
    path.write_text('{"participant_id": "sub-09"}')
    with pytest.raises(InputError, match=r"sub-09_desc-jdam_metrics\.json: .*lacks the key"):
        ParticipantMetrics.from_json(path)


def test_group_level_table_and_report(derivatives):
    _, out_dir = derivatives
    tsv_path, html_path = out_dir / "group_metrics.tsv", out_dir / "group_report.html"
    table = pd.read_csv(tsv_path, sep="\t", na_values=["n/a"])
    assert len(table) == len(IMAGES)
    assert sorted(table["participant_id"].unique()) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert {"suvr_parietal", "realsuvr_parietal", "psnr", "noise_index", "outlier", "diagnosis"} <= set(table)
    by_diagnosis = table.groupby("diagnosis")
    for column in ("suvr_parietal", "realsuvr_parietal"):
        assert by_diagnosis[column].mean()["AD"] < 0.9 * by_diagnosis[column].mean()["CN"]
    assert math.isnan(table.loc[table["participant_id"] == "sub-02", "psnr"].iloc[0])  # no real PET
    with_real = table[table["psnr"].notna()]
    assert list(with_real["sd_error_correlation"]) == pytest.approx(
        [0.1 * int(p[4:]) for p in with_real["participant_id"]]
    )
    report = html_path.read_text()
    assert list(with_real["view_sd_error_correlation"]) == pytest.approx(
        [-0.05 * int(p[4:]) for p in with_real["participant_id"]]
    )
    assert "SD-error correlations" in report and "SD across the sampled planes" in report
    missing = report.split("Participants without outputs", 1)[1].split("<h2>", 1)[0]
    assert "sub-05" in missing and "sub-01" not in missing


def test_group_level_reports_coverage_per_image_and_per_model(derivatives):
    _, out_dir = derivatives
    table = pd.read_csv(out_dir / "group_metrics.tsv", sep="\t", keep_default_na=False)
    rows = {(p, s): row for p, s, row in zip(table["participant_id"], table["session"], table.to_dict("records"))}
    assert {"coverage_50", "coverage_90", "spread_skill"} <= set(table)
    for key in (("sub-02", "n/a"), ("sub-01", "B"), ("sub-04", "B")):  # no real PET, or no SD map
        assert [rows[key][c] for c in ("coverage_50", "coverage_90", "spread_skill")] == ["n/a"] * 3
    assert float(rows[("sub-03", "n/a")]["coverage_90"]) == pytest.approx(0.86)
    assert float(rows[("sub-04", "A")]["spread_skill"]) == pytest.approx(1.0)
    calibration = (out_dir / "group_report.html").read_text().split("<h2>Spread calibration</h2>")[1]
    lines = [html.unescape(line) for line in re.findall(r"<li>([^<]*)</li>", calibration.split("<h2>", 1)[0])]
    assert len(lines) == 3  # the phantom, the uncalibrated and the calibrated model
    calibrated = next(line for line in lines if "spread calibrated" in line)
    assert (
        "scale 1.7 fitted on 3 held-out subjects (level 90 %, K = 4 samples); here K = 2, so the "
        "coverage may differ; mean"
    ) in calibrated
    assert (
        "mean over the 1 image(s) with a real PET and K > 1: coverage 0.50 of the 50 % interval and 0.86 of "
        "the 90 % interval (nominal 0.50 and 0.90), spread-skill ratio 0.90 (nominal 1.0)" in calibrated
    )
    assert sum("spread NOT calibrated: the SD map is likely too small" in line for line in lines) == 2


def test_group_level_tolerates_partial_outputs_and_flags_outliers(derivatives, tmp_path):
    """A corrupt JSON (sub-02), an image that failed QC (sub-05) and a bad registration (sub-01 ses-B) in one
    dataset."""
    bids_dir, out_dir = derivatives
    partial = tmp_path / "out"
    shutil.copytree(out_dir, partial)
    (partial / "sub-02" / "figures" / "sub-02_desc-jdam_metrics.json").write_text("{ truncated")
    bad_registration = partial / "sub-01" / "figures" / "sub-01_ses-B_desc-jdam_metrics.json"
    metrics = ParticipantMetrics.from_json(bad_registration)
    metrics.registration = RegistrationCheck(0.2)
    metrics.to_json(bad_registration)
    metrics.participant_id, metrics.session, metrics.status = "sub-05", None, "failed-qc"
    metrics.qc_failures = ["registration correlation with the template 0.13 < 0.5"]
    metrics.to_json(partial / "sub-05" / "figures" / "sub-05_desc-jdam_metrics.json")

    tsv_path, html_path, unreadable = run_group_level(partial, bids_dir)
    assert len(unreadable) == 1 and "sub-02_desc-jdam_metrics.json" in unreadable[0]
    table = pd.read_csv(tsv_path, sep="\t", na_values=["n/a"])
    assert len(table) == len(IMAGES) and "sub-02" not in set(table["participant_id"])
    assert list(table.loc[table["participant_id"] == "sub-05", "status"]) == ["failed-qc"]
    assert set(table.loc[table["participant_id"] != "sub-05", "status"]) == {"ok"}
    flagged = table[table["outlier"]]
    assert list(zip(flagged["participant_id"], flagged["session"])) == [("sub-01", "B")]
    assert flagged["outlier_measures"].iloc[0] == "registration_correlation"
    report = html.unescape(html_path.read_text())
    failed_qc = report.split("Images that failed quality control", 1)[1].split("<h2>", 1)[0]
    assert "sub-05: registration correlation with the template 0.13 < 0.5" in failed_qc
    missing = report.split("Participants without outputs", 1)[1].split("<h2>", 1)[0]
    assert "sub-02" in missing and "sub-05" in missing and "not valid JSON" in missing


def test_group_level_without_any_output_lists_everyone(tmp_path):
    bids_dir, out_dir = tmp_path / "bids", tmp_path / "out"
    for subject in ("sub-01", "sub-02"):
        (bids_dir / subject / "anat").mkdir(parents=True)
    out_dir.mkdir()
    tsv_path, html_path, _ = run_group_level(out_dir, bids_dir)  # no participants.tsv: the sub-* folders count
    assert pd.read_csv(tsv_path, sep="\t").empty
    missing = html_path.read_text().split("Participants without outputs", 1)[1]
    assert "sub-01" in missing and "sub-02" in missing


def test_participant_report_refuses_another_subjects_image(derivatives, tmp_path):
    _, out_dir = derivatives
    entry = ReportEntry(
        stem="sub-02",
        t1w=out_dir,
        brain_mask=out_dir,
        template_t1=out_dir,
        synthetic_pet=out_dir,
        std_map=None,
        real_pet=None,
        metrics=ParticipantMetrics.from_json(out_dir / "sub-02/figures/sub-02_desc-jdam_metrics.json"),
    )
    with pytest.raises(InputError, match="sub-02: this image does not belong to sub-01"):
        write_participant_report(tmp_path, "01", [entry])
    assert not (tmp_path / "sub-01.html").exists()


def test_regional_means_respects_mask():
    labels = np.array([[[1, 1, 2, 0]]], dtype=np.int16)
    data = np.array([[[1.0, 3.0, 5.0, 100.0]]])
    assert regional_means(data, labels, {1: "a", 2: "b"}) == {"a": 2.0, "b": 5.0}
    masked = regional_means(data, labels, {1: "a", 2: "b"}, mask=np.array([[[True, False, False, True]]]))
    assert masked["a"] == 1.0 and math.isnan(masked["b"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Appended to a copy of a report: after load, count <img> elements that did not decode (naturalWidth 0).
IMAGE_CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0);
  const marker = document.createElement('pre');
  marker.textContent = `images=${images.length} broken=${broken.length}`;
  document.body.appendChild(marker);
});
</script>"""


def chromium_image_check(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(number of images, number that failed to load) of ``page`` rendered in headless Chromium."""
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(page.read_text().replace("</body>", IMAGE_CHECK_SCRIPT + "</body>"))
    result = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            "--virtual-time-budget=10000",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = re.search(r"images=(\d+) broken=(\d+)", result.stdout)
    assert found, f"the image check did not run: {result.stderr[-500:]}"
    return int(found.group(1)), int(found.group(2))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_reports_render_in_headless_chromium(derivatives, tmp_path):
    import matplotlib.image

    _, out_dir = derivatives
    broken_page = tmp_path / "broken.html"
    broken_page.write_text('<html><body><img src="data:image/png;base64,AAAA"><img src="missing.png"></body></html>')
    assert chromium_image_check(broken_page, tmp_path) == (2, 2)  # the check can fail

    for page in (out_dir / "sub-01.html", out_dir / "group_report.html"):
        n_images, n_broken = chromium_image_check(page, tmp_path)
        assert n_images >= 3 and n_broken == 0, f"{page.name}: {n_broken} of {n_images} images did not load"

    screenshot = tmp_path / "sub-01.png"
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,2400",
            (out_dir / "sub-01.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    dark = pixels.mean(axis=-1) < 0.2  # brain slices on black backgrounds; a blank page is all white
    assert dark.mean() > 0.05
