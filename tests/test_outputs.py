"""Output folders: owned, locked, and replaced only once the new run is done.

The promise under test: no file that a run did not write is ever removed, and an earlier
run's files stay byte for byte as they were until a new run into the folder has finished
(checked by hashing every file before and after). The processes that claim a folder at once,
or are killed while running or while committing, are real processes: small scripts that load
:mod:`risloss._outputs` by its file (it imports nothing else, so they start fast).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import risloss._outputs as outputs
from risloss._outputs import (
    MANIFEST,
    WORK_FOLDER,
    OutputCommitError,
    OutputFolderError,
    OutputInUseError,
    claim_output,
    recover_output,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks and signals")


def hashes(folder: Path, *, work: bool = False) -> dict[str, str]:
    """Every file and folder below ``folder`` (relative path -> SHA-256 or ``"<dir>"``);
    the claim's own folder is left out unless ``work``."""
    found = {}
    for p in sorted(folder.rglob("*")):
        key = p.relative_to(folder).as_posix()
        if not work and key.split("/")[0] == WORK_FOLDER:
            continue
        found[key] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def finished_run(out: Path, kind: str = "quantize", tag: str = "old") -> dict[str, str]:
    """A finished run of ``kind`` in ``out`` (through a claim), plus a user's file beside it;
    the hashes of the folder."""
    with claim_output(out, kind) as folder:
        for name in ("checkpoint.pt", "student.pt", "samples.png", "metrics.json"):
            folder.path_for(name).write_text(f"{tag} {name}")
    (out / "notes.txt").write_text("the user's notes")
    return hashes(out)


def write_new_run(folder: outputs.OutputFolder, tag: str = "new") -> None:
    for name in ("checkpoint.pt", "student.pt", "metrics.json"):
        folder.path_for(name).write_text(f"{tag} {name}")


@pytest.fixture(autouse=True)
def no_stage_hook() -> Iterator[None]:
    yield
    outputs._stage_hook = None


# Owned: what a run may write into ----------------------------------------------------------


def test_a_new_folder_is_made_and_records_the_run(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with claim_output(out, "quantize", command="risloss quantize --out a/b") as folder:
        assert folder.path == out and not folder.staged and folder.previous == "new"
        assert json.loads((out / MANIFEST).read_text())["state"] == "running"
        write_new_run(folder)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "quantize" and manifest["state"] == "complete"
    assert manifest["command"] == "risloss quantize --out a/b"
    assert manifest["format"] == outputs.FORMAT
    assert manifest["files"] == ["checkpoint.pt", "metrics.json", "student.pt"]
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST, "checkpoint.pt", "metrics.json", "student.pt"
    ]  # fmt: skip
    assert folder.committed and folder.outcome is None


def test_a_run_that_writes_nothing_leaves_no_trace(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), claim_output(tmp_path / "x" / "out", "quantize"):
        raise RuntimeError("the model does not load")
    assert hashes(tmp_path, work=True) == {}  # even the folders the claim made are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError), claim_output(empty, "quantize") as folder:
        raise RuntimeError("the model does not load")
    assert hashes(empty, work=True) == {}
    assert folder.outcome == f"--out {empty}: nothing was written; the folder is as it was"


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"synthetic/mine/f": "x"}, "synthetic/mine/f"),  # a folder synthesize would write
        ({"student.pt": "mine"}, "student.pt"),  # a run's file name, but no run marker
        ({"a": "1", "b": "2", "c": "3", "d": "4"}, "a, b, c, ... (1 more)"),
    ],
)
def test_other_files_are_refused_without_overwrite(
    files: dict[str, str], named: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = hashes(tmp_path, work=True)
    said = {}
    for resume in (False, True):
        with pytest.raises(OutputFolderError) as err:
            claim_output(out, "synthesize", resume=resume)
        said[resume] = str(err.value)
        assert said[resume].startswith(f"--out {out} holds ")
        assert named in said[resume] and "\n" not in said[resume]
        assert hashes(tmp_path, work=True) == before
    assert "choose a new or empty --out, or write beside them with --overwrite" in said[False]
    assert "holds no risloss run to continue with --resume" in said[True]


def test_overwrite_beside_other_files_keeps_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "synthetic" / "mine").mkdir(parents=True)
    (out / "synthetic" / "mine" / "f").write_text("the user's")
    (out / "student.pt").write_text("the user's weights")
    with claim_output(out, "synthesize", overwrite=True) as folder:
        assert folder.staged and folder.previous == "foreign"
        folder.path_for("synthetic/0/00000.png").parent.mkdir(parents=True)
        folder.path_for("synthetic/0/00000.png").write_text("png")
        folder.path_for("student.pt").write_text("new weights")
        assert (out / "student.pt").read_text() == "the user's weights"  # until the commit
    assert (out / "synthetic" / "mine" / "f").read_text() == "the user's"
    assert (out / "synthetic" / "0" / "00000.png").read_text() == "png"
    assert (out / "student.pt").read_text() == "new weights"  # the name the run writes
    assert not (out / WORK_FOLDER).exists()
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert listed == ["student.pt", "synthetic/0/00000.png"]


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = finished_run(out)
    with pytest.raises(OutputFolderError) as err:
        claim_output(out, "quantize")
    assert str(err.value) == (
        f"--out {out} already holds a finished quantize run: continue it with --resume, or "
        "start over with --overwrite"
    )
    with pytest.raises(OutputFolderError, match="holds a finished quantize run: choose another"):
        claim_output(out, "synthesize")
    with pytest.raises(OutputFolderError, match="not a synthesize run: --resume continues"):
        claim_output(out, "synthesize", resume=True)
    assert hashes(out, work=True) == before
    with claim_output(out, "quantize", resume=True) as folder:
        assert folder.path == out and not folder.staged
        folder.path_for("student.pt").write_text("resumed")
    assert hashes(out)["notes.txt"] == before["notes.txt"]


def test_a_folder_of_an_earlier_version_counts_as_a_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("checkpoint.pt", "metrics.json", "student.pt", "losses.png"):
        (out / name).write_text(f"old {name}")
    (out / "synthetic" / "3").mkdir(parents=True)
    (out / "synthetic" / "3" / "00007.png").write_text("old png")
    (out / "synthetic" / "mine").mkdir()
    (out / "synthetic" / "mine" / "f").write_text("the user's")
    before = hashes(out)
    with pytest.raises(OutputFolderError, match=r"already holds a run \(checkpoint.pt, metrics"):
        claim_output(out, "quantize")
    assert hashes(out, work=True) == before
    with claim_output(out, "quantize", overwrite=True) as folder:
        assert folder.previous == "legacy"
        write_new_run(folder)
    after = hashes(out)
    # The earlier run's files go (losses.png, synthetic/3/...), the user's stays.
    assert sorted(after) == sorted(
        [MANIFEST, "checkpoint.pt", "metrics.json", "student.pt", "synthetic", "synthetic/mine",
         "synthetic/mine/f"]
    )  # fmt: skip
    assert after["synthetic/mine/f"] == before["synthetic/mine/f"]


def test_overwrite_replaces_only_the_runs_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = finished_run(out)
    with claim_output(out, "quantize", overwrite=True) as folder:
        assert folder.staged and folder.path == out / WORK_FOLDER / "staging"
        write_new_run(folder)
        assert hashes(out) == before  # nothing moves before the commit
    after = hashes(out)
    assert "samples.png" not in after  # the earlier run's, not written by the new one
    assert after["notes.txt"] == before["notes.txt"]
    assert (out / "student.pt").read_text() == "new student.pt"
    assert not (out / WORK_FOLDER).exists()


def test_resume_and_overwrite_exclude_each_other_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        claim_output(tmp_path, "quantize", resume=True, overwrite=True)
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        claim_output(tmp_path, "")
    with pytest.raises(OutputFolderError, match="does not exist: there is no run to continue"):
        claim_output(tmp_path / "none", "quantize", resume=True)
    assert not (tmp_path / "none").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        claim_output(tmp_path / "file", "quantize")
    with claim_output(tmp_path / "out", "quantize") as folder:
        for bad in ("", "/etc/passwd", "../x", MANIFEST, f"{WORK_FOLDER}/lock"):
            with pytest.raises(ValueError, match="name must be a path inside the output folder"):
                folder.path_for(bad)


def test_an_unfinished_run_is_kept_for_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), claim_output(out, "quantize") as folder:
        folder.path_for("checkpoint.pt").write_text("iteration 2")
        raise KeyboardInterrupt
    assert folder.outcome == (
        f"--out {out} holds this unfinished run: continue it with --resume, or start over "
        "with --overwrite"
    )
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["state"] == "running" and manifest["files"] == ["checkpoint.pt"]
    with pytest.raises(OutputFolderError, match="already holds an unfinished quantize run"):
        claim_output(out, "quantize")
    with claim_output(out, "quantize", resume=True) as folder:
        folder.path_for("student.pt").write_text("done")
        (out / "report.txt").write_text("the user's, written while the run goes on")
        folder.path_for("extra/table.csv").parent.mkdir()
        folder.path_for("extra/table.csv").write_text("a file of the run's own naming")
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert listed == ["checkpoint.pt", "extra/table.csv", "student.pt"]  # not report.txt
    with claim_output(out, "quantize", overwrite=True) as folder:
        folder.path_for("student.pt").write_text("new")
    assert sorted(hashes(out)) == [MANIFEST, "report.txt", "student.pt"]


# Locked: one run at a time ------------------------------------------------------------------


def test_a_second_claim_is_refused_naming_the_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = claim_output(out, "quantize")
    with pytest.raises(OutputInUseError) as err:
        claim_output(out, "quantize", overwrite=True)
    assert err.value.pid == os.getpid()
    assert str(err.value) == (
        f"--out {out} is in use by another run (process {os.getpid()}): wait for it to end, "
        "or choose another --out"
    )
    first.close()
    with claim_output(out, "quantize"):  # free again: the first one wrote nothing
        pass


SCRIPT = """
import importlib.util, os, signal, sys, time
from pathlib import Path

spec = importlib.util.spec_from_file_location("outputs_under_test", {module!r})
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)
out, action = Path(sys.argv[1]), sys.argv[2]
stage = sys.argv[3] if len(sys.argv) > 3 else None

if stage is not None:
    def stop(name):
        if name == stage:
            os.kill(os.getpid(), signal.SIGKILL)
    outputs._stage_hook = stop
try:
    folder = outputs.claim_output(
        out, "quantize", overwrite=action.endswith("overwrite"), resume=action == "resume"
    )
except outputs.OutputFolderError as err:
    print(err, flush=True)
    sys.exit(2)
with folder:
    for name in ("checkpoint.pt", "student.pt", "metrics.json"):
        folder.path_for(name).write_text(f"{{action}} {{name}}")
    (out.parent / "ready").write_text(str(os.getpid()))
    if action == "hold":
        while not (out.parent / "go").exists():
            time.sleep(0.02)
    if action.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
print("done", flush=True)
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "claim.py"
    path.write_text(textwrap.dedent(SCRIPT.format(module=outputs.__file__)))
    return path


def _start(tmp_path: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(_script(tmp_path)), str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the first process did not start"
        time.sleep(0.02)


def test_two_processes_into_one_folder_the_second_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _start(tmp_path, out, "hold")
    try:
        _wait_for(tmp_path / "ready", first)
        second = subprocess.run(
            [sys.executable, str(_script(tmp_path)), str(out), "overwrite"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert second.stdout.strip() == (
            f"--out {out} is in use by another run (process {first.pid}): wait for it to "
            "end, or choose another --out"
        )
        assert first.poll() is None  # the first is still going, untouched
    finally:
        (tmp_path / "go").write_text("")
        text, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and text.strip() == "done"
    assert (out / "student.pt").read_text() == "hold student.pt"
    assert json.loads((out / MANIFEST).read_text())["state"] == "complete"


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = _start(tmp_path, out, "die")
    dead.communicate(timeout=60)
    assert dead.returncode == -signal.SIGKILL
    assert (out / WORK_FOLDER / "lock").exists()  # left behind, with the dead process's pid
    with claim_output(out, "quantize", resume=True) as folder:
        lock = json.loads((out / WORK_FOLDER / "lock").read_text())
        assert lock["pid"] == os.getpid()
        assert (folder.path / "checkpoint.pt").read_text() == "die checkpoint.pt"
        folder.path_for("student.pt").write_text("finished")
    assert not (out / WORK_FOLDER).exists()


# Atomic overwrite: the earlier run stays until the new one is done ---------------------------


@pytest.mark.parametrize("stop_after", [0, 1, 3])
def test_an_overwrite_that_stops_leaves_the_earlier_run(stop_after: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = finished_run(out)
    with pytest.raises(RuntimeError), claim_output(out, "quantize", overwrite=True) as folder:
        for name in ("checkpoint.pt", "student.pt", "metrics.json")[:stop_after]:
            folder.path_for(name).write_text(f"new {name}")
        raise RuntimeError("a corrupt evaluation image")
    assert hashes(out) == before
    if stop_after:
        assert folder.outcome == (
            f"--out {out}: the earlier run's files are as they were; this run's files are kept "
            f"apart in {folder.path}: continue it with --resume, or start over with --overwrite"
        )
        with pytest.raises(OutputFolderError, match="holds an unfinished --overwrite run"):
            claim_output(out, "quantize")
        # --resume continues the new run where it wrote, and its end replaces the earlier run.
        with claim_output(out, "quantize", resume=True) as again:
            assert again.staged and again.path == folder.path
            assert (again.path / "checkpoint.pt").read_text() == "new checkpoint.pt"
            write_new_run(again, "resumed")
            assert hashes(out) == before
        assert (out / "student.pt").read_text() == "resumed student.pt"
        assert hashes(out)["notes.txt"] == before["notes.txt"]
    else:
        assert folder.outcome == f"--out {out}: the earlier run's files are as they were"
        assert hashes(out, work=True) == before  # not even a staging folder is left


@pytest.mark.parametrize("stage", ["journal", "set-aside", "moved-in", "manifest"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_commit_that_fails_is_undone(stage: str, error: BaseException, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = finished_run(out)

    def fail(name: str) -> None:
        if name == stage:
            raise error

    with pytest.raises((OutputCommitError, KeyboardInterrupt)) as caught:
        with claim_output(out, "quantize", overwrite=True) as folder:
            write_new_run(folder)
            outputs._stage_hook = fail
    outputs._stage_hook = None
    if isinstance(error, OSError):
        assert caught.type is OutputCommitError
        assert "the earlier run's files are as they were" in str(caught.value)
    assert hashes(out) == before
    assert not (out / WORK_FOLDER / "commit.json").exists()
    with claim_output(out, "quantize", resume=True) as again:  # the new run is kept
        assert again.staged
    assert (out / "student.pt").read_text() == "new student.pt"


@pytest.mark.parametrize("stage", ["journal", "set-aside", "moved-in", "manifest", "done"])
def test_a_commit_killed_midway_is_undone_or_completed(stage: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = finished_run(out)
    killed = _start(tmp_path, out, "overwrite", stage)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    message = recover_output(out)
    if stage == "done":  # past the commit point: the new run is in place
        assert message == "a commit that was interrupted was completed"
        assert (out / "student.pt").read_text() == "overwrite student.pt"
        assert "samples.png" not in hashes(out)
        assert hashes(out)["notes.txt"] == before["notes.txt"]
    else:
        assert (
            message == "a commit that was interrupted was undone: the earlier run's files are back"
        )
        assert hashes(out) == before
        with claim_output(out, "quantize", resume=True) as again:
            assert again.staged
        assert (out / "student.pt").read_text() == "overwrite student.pt"
    assert recover_output(out) is None


@pytest.mark.parametrize(("action", "stage"), [("die-overwrite", None), ("overwrite", "set-aside")])
def test_a_killed_overwrite_run_leaves_the_earlier_run(
    action: str, stage: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = finished_run(out)
    killed = _start(tmp_path, out, action, *([stage] if stage else []))
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    if stage is None:  # killed while running: nothing of the earlier run was touched
        assert hashes(out) == before
    # Killed while committing, it is not undone yet: the next claim does it first.
    with pytest.raises(OutputFolderError, match="holds an unfinished --overwrite run"):
        claim_output(out, "quantize")
    assert hashes(out) == before


def legacy_run(out: Path) -> dict[str, str]:
    """A run of a version that wrote no manifest, and a user's file beside it."""
    out.mkdir()
    for name in ("checkpoint.pt", "metrics.json", "student.pt", "samples.png"):
        (out / name).write_text(f"old {name}")
    (out / "notes.txt").write_text("the user's notes")
    return hashes(out)


@pytest.mark.parametrize("stage", ["set-aside", "moved-in", "manifest"])
def test_a_failed_commit_over_a_folder_without_manifest_leaves_none(
    stage: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = legacy_run(out)

    def fail(name: str) -> None:
        if name == stage:
            raise OSError(5, "Input/output error")

    with pytest.raises(OutputCommitError, match="the earlier run's files are as they were"):
        with claim_output(out, "quantize", overwrite=True) as folder:
            write_new_run(folder)
            outputs._stage_hook = fail
    assert hashes(out) == before  # no manifest appeared


def test_a_commit_that_cannot_place_a_file_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.pt").mkdir()  # a folder where the run writes a file
    (out / "student.pt" / "mine").write_text("the user's")
    before = hashes(out)
    with pytest.raises(OutputCommitError, match=r"cannot put student\.pt in place"):
        with claim_output(out, "quantize", overwrite=True) as folder:
            folder.path_for("student.pt").write_text("new")
    assert hashes(out) == before
