"""Cached steps: skipped when nothing changed, re-run when an input or setting changed, resumable after a crash."""

from __future__ import annotations

import logging

import pytest

from bids_jdam.errors import StepError
from bids_jdam.preprocess import cache
from bids_jdam.preprocess.cache import StepRunner


def _copy_upper(source, calls):
    def action(out):
        calls.append(1)
        out["upper"].write_text(source.read_text().upper())
        return {"length": len(source.read_text())}

    return action


def test_second_run_reuses_and_changes_rerun(tmp_path, caplog):
    source = tmp_path / "in.txt"
    source.write_text("abc")
    calls = []
    run = lambda settings: StepRunner(tmp_path / "work", "01").run(  # noqa: E731
        "upper",
        _copy_upper(source, calls),
        inputs={"text": source},
        outputs={"upper": "upper.txt"},
        settings=settings,
        code=(_copy_upper,),
    )
    with caplog.at_level(logging.INFO, logger="bids_jdam.preprocess"):
        first = run({"k": 1})
    assert not first.reused and first.metadata == {"length": 3}
    assert "sub-01 upper: ran in" in caplog.text
    second = run({"k": 1})
    assert second.reused and len(calls) == 1 and second.metadata == {"length": 3}
    run({"k": 2})  # a setting changed
    assert len(calls) == 2
    source.write_text("abcd")  # an input's content changed
    assert not run({"k": 2}).reused and len(calls) == 3
    (tmp_path / "work" / "upper.txt").write_text("tampered")  # an output no longer matches its record
    assert not run({"k": 2}).reused and (tmp_path / "work" / "upper.txt").read_text() == "ABCD"


def test_failed_step_leaves_no_output_and_names_subject_step_and_file(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("abc")

    def crash(out):
        out["upper"].write_text("half")
        raise RuntimeError("killed")

    runner = StepRunner(tmp_path / "work", "07")
    with pytest.raises(StepError) as exc:
        runner.run("upper", crash, inputs={"text": source}, outputs={"upper": "upper.txt"}, code=(crash,))
    message = str(exc.value)
    assert "sub-07" in message and "upper" in message and str(source) in message
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []  # no output, no record, no temporary
    calls = []
    resumed = runner.run(
        "upper",
        _copy_upper(source, calls),
        inputs={"text": source},
        outputs={"upper": "upper.txt"},
        code=(_copy_upper,),
    )
    assert not resumed.reused and calls == [1]
    assert (tmp_path / "work" / "upper.txt").read_text() == "ABC"


def test_a_killed_steps_leftovers_are_removed_when_a_step_runs(tmp_path):
    """A SIGKILL skips every cleanup: half-written outputs and registration scratch folders stay behind."""
    work = tmp_path / "work"
    (work / ".tmp-0123abcd-warp.nii.gz").parent.mkdir(parents=True)
    (work / ".tmp-0123abcd-warp.nii.gz").write_bytes(b"half a warp")
    (work / ".tmp-scratch").mkdir()
    (work / ".tmp-scratch" / "reg_0GenericAffine.mat").write_bytes(b"x")
    (work / "keep.txt").write_text("not ours to delete")
    source = tmp_path / "in.txt"
    source.write_text("abc")
    StepRunner(work, "01").run(
        "upper", _copy_upper(source, []), inputs={"text": source}, outputs={"upper": "upper.txt"}, code=(_copy_upper,)
    )
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "upper.json", "upper.txt"]


@pytest.mark.parametrize("written", [b"", b"\x1f\x8b\x08\x00 a gzip cut short"])
def test_an_empty_or_truncated_output_fails_the_step_and_never_gets_its_final_name(tmp_path, written):
    """On a full disk ANTs printed 'wrote only 0 of 1699200 bytes' and returned: the step must fail there."""
    source = tmp_path / "in.txt"
    source.write_text("abc")
    work = tmp_path / "work"
    with pytest.raises(StepError) as exc:
        StepRunner(work, "01").run(
            "registration",
            lambda out: out["warp"].write_bytes(written),
            inputs={"text": source},
            outputs={"warp": "warp.nii.gz"},
            code=(_copy_upper,),
        )
    message = str(exc.value)
    assert str(work / "warp.nii.gz") in message and "disk full" in message and "\n" not in message
    assert sorted(p.name for p in work.iterdir()) == []


def test_cpu_seconds_count_child_processes(tmp_path):
    """Registration runs in a child process: its CPU time belongs to the step's."""
    import subprocess
    import sys

    def busy_child(out):
        spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
        subprocess.run([sys.executable, "-c", spin], check=True)
        out["done"].write_text("ok")

    result = StepRunner(tmp_path / "work", "01").run(
        "child", busy_child, inputs={}, outputs={"done": "done.txt"}, code=(busy_child,)
    )
    assert result.cpu_seconds >= 0.35


def _copy_lower(source, calls):
    def action(out):
        calls.append(1)
        out["upper"].write_text(source.read_text().lower())

    return action


def test_a_step_runs_again_when_its_code_changes(tmp_path):
    """A work directory made by other code for a step (same package versions) is not reused for that step."""
    source = tmp_path / "in.txt"
    source.write_text("abc")
    calls = []
    run = lambda code: StepRunner(tmp_path / "work", "01").run(  # noqa: E731
        "upper", _copy_upper(source, calls), inputs={"text": source}, outputs={"upper": "upper.txt"}, code=code
    )
    run((_copy_upper,))
    assert run((_copy_upper,)).reused and len(calls) == 1
    assert not run((_copy_upper, _copy_lower)).reused and len(calls) == 2
    assert cache.code_digest((_copy_upper,)) != cache.code_digest((_copy_lower,))
    assert cache.code_digest((cache,)) == cache.code_digest((cache,))  # a module's source works too
