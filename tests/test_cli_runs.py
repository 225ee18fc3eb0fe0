"""The command line on runs a careless user starts: over an old run, without matplotlib, with
Ctrl-C during start-up, from a script. The numbers refer to the list of hardening problems the
command line had (plain install: 1, silent overwrite: 2, Ctrl-C during start-up: 6, silence off
a terminal: 9).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from risloss.training._progress import Progress
from tests._cli import TINY, factory_module, hashes, one_line, run
from tests._data import fashion_mnist_or_skip

# 2. A folder that holds a run -----------------------------------------------------------------


def _old_run(out: Path, files: tuple[str, ...]) -> None:
    """The files of an earlier run (their content does not matter: they must not be read)."""
    out.mkdir(parents=True)
    for name in files:
        (out / name).write_bytes(f"old {name}".encode())


@pytest.mark.parametrize(
    "files",
    [
        ("checkpoint.pt",),  # an interrupted run
        ("metrics.json",),
        ("checkpoint.pt", "metrics.json", "student.pt", "samples.png"),  # a finished run
    ],
)
@pytest.mark.parametrize("command", ["quantize", "distill", "prune"])
def test_a_folder_holding_a_run_is_refused(
    command: str, files: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ow"
    _old_run(out, files)
    before = hashes(tmp_path)
    code, _, err = run([command, *TINY, "--out", str(out)], capsys)
    line = one_line(err)
    assert code == 2
    assert f"--out {out} already holds a run" in line
    assert "--resume" in line and "--overwrite" in line
    assert hashes(tmp_path) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_is_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "ow"
    _old_run(out, ("checkpoint.pt", "metrics.json", "student.pt", "samples.png", "generator.pt"))
    (out / "notes.txt").write_text("mine")  # a file no run wrote: kept whatever happens
    before = hashes(tmp_path)
    # Fails at set-up (the teacher has 10 classes), after the folder checks: nothing changes.
    bad = ["--diversity", "soft", "--soft-label-classes", "20"]
    code, _, err = run(["quantize", *TINY, "--out", str(out), "--overwrite", *bad], capsys)
    line = one_line(err)
    assert code == 2
    assert "--soft-label-classes must be at most the teacher's number of classes (10)" in line
    assert line.endswith(f"--out {out}: the earlier run's files are as they were")
    assert hashes(tmp_path) == before
    # Fails after its checkpoints, while writing its results: the earlier run is still whole.
    from risloss.training import TrainJob

    def full_disk(self: object, run: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(TrainJob, "outputs", full_disk)
        code, _, err = run(["quantize", *TINY, "--out", str(out), "--overwrite", "--quiet"], capsys)
    line = one_line(err)
    assert code == 1
    assert "No space left on device" in line
    assert f"--out {out}: the earlier run's files are as they were; this run's files" in line
    assert hashes(tmp_path) == {
        **before,
        **{k: v for k, v in hashes(tmp_path).items() if k.startswith("ow/.risloss-run")},
    }
    # A run that finishes replaces the old one; the old run's files that it does not write
    # (no generator with --method noise) go, so the folder describes one run; notes.txt stays.
    code, out_text, _ = run(
        ["quantize", *TINY, "--out", str(out), "--overwrite", "--method", "noise"], capsys
    )
    assert code == 0
    assert "quantized top-1:" in out_text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".risloss-run.json", "checkpoint.pt", "metrics.json", "student.pt", "losses.png",
         "notes.txt"]
    )  # fmt: skip
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["config"]["method"] == "noise"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 6


# 1. A plain install: no matplotlib --------------------------------------------------------------


def _without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


def test_without_matplotlib_the_run_completes_and_skips_only_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    _without_matplotlib(monkeypatch)
    out = tmp_path / "plain"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out_text, err = run(["quantize", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert f"outputs: {out}" in out_text
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".risloss-run.json", "checkpoint.pt", "generator.pt", "metrics.json", "samples.png",
        "student.pt",
    ]  # fmt: skip
    notes = [line for line in err.splitlines() if "is not installed" in line]
    assert notes == [
        "risloss quantize: losses.png will be skipped: matplotlib is not installed "
        "(pip install 'risloss[plot]' adds it)"
    ]
    assert not [w for w in caught if "matplotlib" in str(w.message)]  # said once, above


def test_loss_plot_without_matplotlib_warns_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from risloss.training._plots import save_loss_plot

    history = [{"iter": 1, "g_loss": 2.0}, {"iter": 2, "g_loss": 1.0}]
    assert save_loss_plot(history, tmp_path / "with.png")
    _without_matplotlib(monkeypatch)
    with pytest.warns(UserWarning, match=r"pip install 'risloss\[plot\]'"):
        assert not save_loss_plot(history, tmp_path / "without.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["with.png"]


# 9. Off a terminal: a start line and progress lines ------------------------------------------


def test_start_line_and_progress_lines_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    out = tmp_path / "log"
    args = ["prune", *TINY, "--iters", "20", "--method", "noise", "--w-bits", "8", "--a-bits", "8"]
    code, _, err = run([*args, "--out", str(out)], capsys)
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == (
        "risloss prune: resnet8_fashion_mnist, 50% of the weights, W8A8, method noise, "
        f"20 iterations (2 warm-up), batch 8, cpu -> {out}"
    )
    progress = [line for line in lines if line.startswith("prune/noise: ")]
    assert 1 <= len(progress) <= 10  # one per 10% of the run (or per minute)
    assert progress[-1].startswith("prune/noise: 20/20 (100%), ")
    assert "\r" not in err  # nothing redrawn in a log


def test_quiet_prints_nothing_but_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fashion_mnist_or_skip("test")
    code, out_text, err = run(
        ["quantize", *TINY, "--method", "noise", "--quiet", "--out", str(tmp_path / "q")], capsys
    )
    assert code == 0
    assert err == ""
    assert "quantized top-1:" in out_text


def test_progress_lines_every_tenth_or_every_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import risloss.training._progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = Progress(1000, desc="run", enabled=True, stream=stream)
    for n in range(1, 1001):
        clock[0] = float(n)  # one second per iteration: a minute passes before a tenth
        bar.update(n)
    bar.close()
    done = [int(line.split()[1].split("/")[0]) for line in stream.getvalue().splitlines()]
    expected = sorted({*range(100, 1001, 100), *range(60, 1001, 100)})
    assert done == expected
    # Off a terminal by default a Progress stays silent, as before (the library's choice).
    quiet = io.StringIO()
    Progress(10, stream=quiet).update(10)
    assert quiet.getvalue() == ""


# 6. Ctrl-C during start-up ---------------------------------------------------------------------


def _interrupted_at(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    ready: Path,
    why: str,
    *,
    wait: float,
    finish: float,
) -> tuple[int, str, str]:
    """Run ``cmd``, send it SIGINT once ``ready`` exists (``why`` if it never does within
    ``wait`` seconds), and return its exit status, stdout and stderr."""
    # A shell starts background jobs with SIGINT ignored, and a child inherits that; start the run
    # as a terminal would, with SIGINT at its default, whatever launched the tests.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + wait
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), why
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=finish)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = factory_module(tmp_path, monkeypatch)
    import importlib

    weights = tmp_path / "w.pt"
    torch.save(importlib.import_module(module).factory().state_dict(), weights)
    out = tmp_path / "run"
    _old_run(out, ("checkpoint.pt", "metrics.json"))
    ready = tmp_path / f"{module}.ready"
    before = {**hashes(out), "weights": hashes(tmp_path)["w.pt"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable, "-m", "risloss", "quantize", *TINY, "--model", f"{module}:slow_factory",
        "--weights", str(weights), "--out", str(out), "--overwrite",
    ]  # fmt: skip
    # Generous on a loaded machine: exiting a process that holds torch can take a while. A run
    # that ignored the signal would still fail below: the factory returns after its 120 s sleep
    # and the run then trains and exits 0, not 130.
    code, stdout, stderr = _interrupted_at(
        cmd, tmp_path, env, ready, "the run did not reach the model", wait=120, finish=150
    )
    assert code == 130, stderr
    messages = [line for line in stderr.splitlines() if not line.startswith("risloss quantize: ")]
    assert messages == [], stderr  # no traceback
    assert stderr.splitlines()[-1] == (
        f"risloss quantize: interrupted before the first checkpoint; --out {out}: the earlier "
        "run's files are as they were"
    )
    assert stdout == ""
    assert {**hashes(out), "weights": hashes(tmp_path)["w.pt"]} == before


_SLOW_TORCH = '''
import importlib.abc, os, pathlib, sys, time

class _SlowTorch(importlib.abc.MetaPathFinder):
    """Marks the moment torch starts to import, then gives a signal time to arrive."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            pathlib.Path(os.environ["TORCH_IMPORT_MARK"]).touch()
            time.sleep(60)
        return None

sys.meta_path.insert(0, _SlowTorch())
'''


@pytest.mark.slow
def test_ctrl_c_while_torch_imports_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """The command line starts without torch: a Ctrl-C while torch imports (the first second of
    a run) is one line and exit status 130, and nothing is written."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_TORCH)
    mark = tmp_path / "torch-importing"
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), *sys.path]),
        "TORCH_IMPORT_MARK": str(mark),
    }
    cmd = [sys.executable, "-m", "risloss", "quantize", *TINY, "--out", str(out)]
    why = "the command line imported torch before its start-up ended"
    code, _, stderr = _interrupted_at(cmd, tmp_path, env, mark, why, wait=60, finish=60)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], stderr
    assert not out.exists()


def test_the_command_line_starts_without_torch() -> None:
    """Importing the command line (and the package) leaves torch for later, so that a Ctrl-C in
    the first second is caught by the command line itself."""
    code = "import sys, risloss, risloss.cli; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
