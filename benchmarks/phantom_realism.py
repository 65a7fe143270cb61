"""Does the phantom's FDG look like real FDG? Its regional pattern against real norms, and its AD effect.

    python -m benchmarks.phantom_realism [--subjects 12] [--seed 1001] [--results DIR] [--figure PNG] [--smoke]

Subjects of a 2 mm phantom (the generator's own draws, anatomy and template-space PET; no files), scored as the
norms were computed: the noise-free PET's mean in each AAL3 region group, inside the gray-matter support (GM
fraction >= 0.5, or tissue >= 0.5 in the deep nuclei), divided by the cerebellar cortex's. Recorded:
- CN subjects against the real healthy pattern (fdg_norms.tsv groups from the Shokri-Kojori et al. 2019 average):
  Pearson and Spearman correlation across groups for the CN mean and for each CN subject, and the differences;
- AD minus CN per group (percent of CN), whether the published hypometabolic groups (posterior cingulate,
  precuneus, lateral parietal, lateral temporal) lose more than the spared ones (sensorimotor, occipital, cerebellum,
  basal ganglia, thalamus), and the Landau et al. (2011) meta-ROI (angular, posterior cingulate, inferior temporal
  over pons + vermis): its AD-CN difference and Cohen's d.
Writes ``<results>/phantom-realism-<machine>.{json,md}`` and the figure (default docs/phantom-regional-uptake.png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.data.atlas import load_atlas
from bids_jdam.data.phantom import PHANTOM_VERSION
from bids_jdam.data.phantom.anatomy import build_anatomy
from bids_jdam.data.phantom.fdg_norms import ATLAS, REFERENCE_GROUP, phantom_regions, region_groups
from bids_jdam.data.phantom.model import draw_subject
from bids_jdam.data.phantom.partial_volume import gray_matter_support, measured_pattern
from bids_jdam.data.phantom.pet import template_pet
from bids_jdam.data.regions import REGION_IDS, coarse_regions

RESULTS = Path(__file__).resolve().parent / "results"
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "phantom-regional-uptake.png"
HYPOMETABOLIC = ("cingulate_posterior", "precuneus", "parietal_lateral", "temporal_lateral")
SPARED = ("sensorimotor", "occipital", "cerebellum_cortex", "caudate", "putamen", "pallidum", "thalamus")
META_ROI = ("Angular", "Cingulate_Post", "Temporal_Inf")
META_ROI_REFERENCE = ("Vermis",)


def meta_roi_suvr(noise_free: np.ndarray, support: np.ndarray, spacing: float) -> float:
    """Landau's meta-ROI over pons + vermis."""
    labels, atlas = phantom_regions(spacing), load_atlas(ATLAS)

    def mask_of(prefixes: tuple[str, ...]) -> np.ndarray:
        indices = [i for i, name in atlas.labels.items() if name.startswith(prefixes)]
        return np.isin(labels, indices)

    reference = mask_of(META_ROI_REFERENCE) | (coarse_regions(spacing)[0] == REGION_IDS["pons"])
    return float(noise_free[mask_of(META_ROI) & support].mean() / noise_free[reference].mean())


def score_subject(seed: int, index: int, spacing: float, stride: int) -> dict:
    """One subject's diagnosis, age, regional pattern and meta-ROI SUVR from the generator's own draws."""
    draw = draw_subject(seed, index, field_strength=3, n_sessions=1, pet_voxel_mm=spacing)
    anatomy = build_anatomy(draw.anatomy, stride, spacing)
    pet = template_pet(anatomy, draw.pet, spacing)
    support = gray_matter_support(anatomy.gm, anatomy.wm, spacing)
    return {
        "subject": f"{index + 1:02d}",
        "diagnosis": draw.diagnosis,
        "age": draw.age,
        "ad_severity": draw.pet.ad_severity,
        "pattern": measured_pattern(pet.noise_free, support, spacing),
        "meta_roi_suvr": meta_roi_suvr(pet.noise_free, support, spacing),
    }


def against_norms(pattern: dict[str, float]) -> dict[str, float]:
    """Pearson and Spearman correlation of a regional pattern with the real norms (reference group excluded)."""
    names = [n for n in region_groups() if n != REFERENCE_GROUP and region_groups()[n].source == "table"]
    norms = [region_groups()[n].uptake for n in names]
    values = [pattern[n] for n in names]
    return {
        "pearson": float(stats.pearsonr(norms, values)[0]),
        "spearman": float(stats.spearmanr(norms, values)[0]),
        "max_abs_difference": float(np.max(np.abs(np.subtract(values, norms)))),
    }


def summarise(subjects: list[dict]) -> dict:
    """CN pattern against the norms, AD-CN per group, the direction check and the meta-ROI effect."""
    by = {dx: [s for s in subjects if s["diagnosis"] == dx] for dx in ("CN", "AD")}
    mean = {
        dx: {n: float(np.mean([s["pattern"][n] for s in group])) for n in region_groups()} for dx, group in by.items()
    }
    ad_minus_cn = {n: 100.0 * (mean["AD"][n] / mean["CN"][n] - 1.0) for n in region_groups()}
    cn_meta, ad_meta = ([s["meta_roi_suvr"] for s in by[dx]] for dx in ("CN", "AD"))
    pooled_sd = float(np.sqrt((np.var(cn_meta, ddof=1) + np.var(ad_meta, ddof=1)) / 2))
    return {
        "cn_mean_against_norms": against_norms(mean["CN"]),
        "cn_subjects_against_norms": [against_norms(s["pattern"]) | {"subject": s["subject"]} for s in by["CN"]],
        "mean_pattern": mean,
        "ad_minus_cn_percent": ad_minus_cn,
        "hypometabolic_groups_lose_more_than_spared": bool(
            max(ad_minus_cn[n] for n in HYPOMETABOLIC) < min(ad_minus_cn[n] for n in SPARED)
        ),
        "meta_roi": {
            "cn_mean": float(np.mean(cn_meta)),
            "ad_mean": float(np.mean(ad_meta)),
            "ad_minus_cn_percent": 100.0 * (np.mean(ad_meta) / np.mean(cn_meta) - 1.0),
            "cohens_d": float((np.mean(cn_meta) - np.mean(ad_meta)) / pooled_sd),
        },
    }


def draw_figure(summary: dict, path: Path) -> None:
    """Regional uptake of the CN and AD means beside the real norms, one row per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(region_groups())
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter([region_groups()[n].uptake for n in names], y, marker="s", color="black", label="real norms (table)")
    for dx, colour in (("CN", "tab:blue"), ("AD", "tab:red")):
        ax.scatter([summary["mean_pattern"][dx][n] for n in names], y, color=colour, label=f"phantom {dx} mean")
    ax.set_yticks(y, [n.replace("_", " ") for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("uptake relative to the cerebellar cortex (noise-free PET, gray-matter support)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict) -> str:
    """Result tables: the correlations, the per-group table and the meta-ROI."""
    s = report["summary"]
    cn = s["cn_mean_against_norms"]
    per_subject = [c["pearson"] for c in s["cn_subjects_against_norms"]]
    lines = markdown_head("Phantom realism: regional FDG pattern against real norms", report) + [
        "",
        f"Phantom version {report['phantom_version']}, seed {report['seed']}, {report['subjects']} subjects, "
        f"{report['grid_spacing_mm']:g} mm grid; noise-free template-space PET in the gray-matter support.",
        "",
        f"- CN mean against the norms: Pearson r = {cn['pearson']:.3f}, Spearman {cn['spearman']:.3f}, "
        f"largest difference {cn['max_abs_difference']:.3f}",
        f"- each CN subject: Pearson r {min(per_subject):.3f} to {max(per_subject):.3f}",
        f"- published hypometabolic groups lose more than the spared ones: "
        f"{s['hypometabolic_groups_lose_more_than_spared']}",
        f"- meta-ROI (angular, posterior cingulate, inferior temporal / pons + vermis): "
        f"CN {s['meta_roi']['cn_mean']:.3f}"
        f", AD {s['meta_roi']['ad_mean']:.3f} ({s['meta_roi']['ad_minus_cn_percent']:+.1f} %), "
        f"Cohen's d {s['meta_roi']['cohens_d']:.2f}",
        "",
        "| group | norm | CN mean | AD mean | AD - CN (%) |",
        "|---|---|---|---|---|",
    ]
    for name, group in region_groups().items():
        lines.append(
            f"| {name} | {group.uptake:.2f} ({group.source}) | {s['mean_pattern']['CN'][name]:.3f} | "
            f"{s['mean_pattern']['AD'][name]:.3f} | {s['ad_minus_cn_percent'][name]:+.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1001)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--smoke", action="store_true", help="4 subjects on the 4 mm grid")
    args = parser.parse_args(argv)
    spacing, stride = (4.0, 2) if args.smoke else (2.0, 1)
    subjects = [score_subject(args.seed, i, spacing, stride) for i in range(4 if args.smoke else args.subjects)]
    report = {
        "command": command_line("benchmarks.phantom_realism", argv),
        "machine": machine_info(),
        "phantom_version": PHANTOM_VERSION,
        "seed": args.seed,
        "subjects": len(subjects),
        "grid_spacing_mm": spacing,
        "per_subject": subjects,
        "summary": summarise(subjects),
    }
    write_results(args.results, "phantom-realism", report, markdown(report))
    draw_figure(report["summary"], args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
