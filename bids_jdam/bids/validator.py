"""Run the official BIDS validator (``bids-validator-deno``) and keep only what decides pass or fail.

The validator is the reference for what the specification accepts, so both the input check of the app and the
tests of the derivatives writer go through it rather than through hand-written rules. It runs offline with its
bundled schema.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bids_jdam.errors import InputError

VALIDATOR_EXECUTABLE = "bids-validator-deno"


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of one validator run: ``errors`` holds one line per error ("CODE [subCode]: location")."""

    ok: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_validator() -> Path:
    """Locate the validator beside the running interpreter (a venv without PATH set up) or on PATH."""
    beside_python = Path(sys.executable).parent / VALIDATOR_EXECUTABLE
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which(VALIDATOR_EXECUTABLE)
    if on_path is None:
        raise InputError(
            f"{VALIDATOR_EXECUTABLE} is not installed: `pip install bids-validator-deno`, "
            "or pass --skip-bids-validation"
        )
    return Path(on_path)


def _issue_line(issue: dict) -> str:
    code = issue.get("code", "UNKNOWN")
    sub_code = issue.get("subCode")
    label = f"{code} {sub_code}" if sub_code else code
    return f"{label}: {issue.get('location', '?')}"


def _crash_reason(completed: subprocess.CompletedProcess) -> str:
    """One line for a validator run without a report; a crash (a deno stack address, a signal) says what to try."""
    lines = [line.strip() for line in (completed.stderr or completed.stdout).splitlines() if line.strip()]
    readable = [line for line in lines if sum(ch.isalpha() for ch in line) > len(line) / 2]
    reason = readable[-1][:200] if readable else f"exit code {completed.returncode}"
    return (
        f"{VALIDATOR_EXECUTABLE} crashed without a report ({reason}); it needs a few GB of virtual memory "
        "(check `ulimit -v`); pass --skip-bids-validation to go on without it"
    )


def run_bids_validator(path: Path, *, ignore_warnings: bool = True) -> ValidationResult:
    """Validate the dataset at ``path``; raise InputError only when the validator itself cannot run."""
    command = [str(find_validator()), "--format", "json", "--no-color"]
    if ignore_warnings:
        command.append("--ignoreWarnings")
    command.append(str(path))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise InputError(
            f"{path}: cannot start {VALIDATOR_EXECUTABLE} ({error.strerror}); "
            "pass --skip-bids-validation to go on without it"
        ) from None
    try:
        report = json.loads(completed.stdout)
        issues = report["issues"]["issues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{path}: {_crash_reason(completed)}") from None
    errors = [_issue_line(issue) for issue in issues if issue.get("severity") == "error"]
    warnings = [_issue_line(issue) for issue in issues if issue.get("severity") == "warning"]
    return ValidationResult(ok=not errors, errors=errors, warnings=warnings)
