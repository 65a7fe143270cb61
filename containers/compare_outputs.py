"""Compare the derivatives of a container run with those of the same run outside it, and say what differs.

    python containers/compare_outputs.py CONTAINER_OUT HOST_OUT

Same file names expected (reports and logs aside); NIfTI images compared voxelwise (largest difference, Pearson r),
JSON sidecars by key. The image and the CPU venv run different torch versions (and builds), so the synthetic PET
may differ in its last digits; exit 1 only when a file is missing on one side or a synthetic PET's correlation with
its counterpart is below 0.99 (a real difference, not rounding).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

MIN_CORRELATION = 0.99
VOLATILE_KEYS = {"SynthesisWallTimeSeconds"}  # differs between any two runs


def derivative_files(root: Path) -> set[str]:
    """Images and sidecars under the subject folders (not the work folder, reports or figures)."""
    return {str(p.relative_to(root)) for p in root.glob("sub-*/*/*") if p.suffix in (".gz", ".json", ".mat")}


def compare_image(a: Path, b: Path) -> tuple[float, float]:
    x, y = (np.asarray(nib.load(str(p)).dataobj, dtype=np.float64).ravel() for p in (a, b))
    r = 1.0 if np.array_equal(x, y) else float(np.corrcoef(x, y)[0, 1])
    return float(np.abs(x - y).max()), r


def main(container_out: Path, host_out: Path) -> int:
    ours, theirs = derivative_files(container_out), derivative_files(host_out)
    bad = 0
    for missing in sorted(ours ^ theirs):
        print(f"FAIL  only in {'the container' if missing in ours else 'the host'} run: {missing}")
        bad += 1
    identical, differing = 0, []
    for name in sorted(ours & theirs):
        a, b = container_out / name, host_out / name
        if a.read_bytes() == b.read_bytes():
            identical += 1
        elif name.endswith(".json"):
            left, right = json.loads(a.read_text()), json.loads(b.read_text())
            keys = sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k) and k not in VOLATILE_KEYS)
            if keys:
                differing.append(f"{name}: keys {', '.join(keys)}")
            else:
                identical += 1  # apart from the wall time
        elif name.endswith(".nii.gz"):
            largest, r = compare_image(a, b)
            differing.append(f"{name}: max |difference| {largest:.3g}, r = {r:.5f}")
            if "desc-jdam_" in name and r < MIN_CORRELATION:
                print(f"FAIL  {name}: correlation {r:.4f} with the host run is below {MIN_CORRELATION}")
                bad += 1
        else:
            differing.append(f"{name}: bytes differ")
    print(f"{'PASS' if not bad else 'FAIL'}  container vs host outputs: {identical} identical (sidecars apart from "
          f"their wall time), "
          f"{len(differing)} differ (torch differs: the image's base torch vs the CPU venv's)")
    for line in differing:
        print(f"      {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
