"""Messages never stop a run: a broken or closed standard output or error is given up quietly.

The end-to-end cases run a real process (a small script that loads :mod:`risloss._streams`
by its file) behind ``| head -1`` and with ``2>&-``, once without the guard, to show that the
situation does kill an unguarded process, and once with it.
"""

from __future__ import annotations

import errno
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import risloss._streams as streams
from risloss._streams import SafeStream, guard_streams, say


class Broken(io.StringIO):
    """A stream whose reader has gone: every write fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.calls = 0

    def write(self, text: str) -> int:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        OSError(errno.EBADF, "Bad file descriptor"),
        OSError(errno.ENOSPC, "No space left on device"),
        ValueError("I/O operation on closed file."),
    ],
)
def test_a_stream_that_is_gone_is_given_up(error: BaseException) -> None:
    target = Broken(error)
    stream = SafeStream(target)
    assert not stream.broken
    assert stream.write("first\n") == 6
    assert stream.broken and target.calls == 1
    assert stream.write("second\n") == 7
    stream.flush()
    assert target.calls == 1  # not tried again
    assert not stream.isatty()


def test_other_errors_are_not_hidden() -> None:
    with pytest.raises(OSError, match="Permission denied"):
        SafeStream(Broken(OSError(errno.EACCES, "Permission denied"))).write("x")
    with pytest.raises(ValueError, match="bad value"):
        SafeStream(Broken(ValueError("bad value"))).write("x")
    with pytest.raises(TypeError, match="write\\(\\) argument must be str, not bytes"):
        SafeStream(io.StringIO()).write(b"x")  # type: ignore[arg-type]


def test_a_working_stream_gets_everything() -> None:
    target = io.StringIO()
    stream = SafeStream(target)
    stream.write("a\n")
    stream.flush()
    assert target.getvalue() == "a\n" and not stream.broken
    assert stream.encoding == "utf-8" and stream.getvalue() == "a\n"  # the rest is passed on
    assert SafeStream(None).broken
    with pytest.raises(io.UnsupportedOperation):
        SafeStream(None).fileno()


def test_say_drops_messages_when_the_stream_is_gone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert say("to stderr") is True
    assert say("to stdout", stream="stdout") is True
    captured = capsys.readouterr()
    assert (captured.err, captured.out) == ("to stderr\n", "to stdout\n")
    monkeypatch.setattr(sys, "stderr", None)
    assert say("lost") is False
    monkeypatch.setattr(sys, "stderr", Broken(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    assert say("lost") is False
    monkeypatch.setattr(sys, "stderr", Broken(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(OSError, match="Permission denied"):
        say("a real error")
    with pytest.raises(ValueError, match="stream must be one of"):
        say("x", stream="stdin")  # type: ignore[arg-type]


def test_guard_streams_wraps_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Broken(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    monkeypatch.setattr(sys, "stdout", gone)
    monkeypatch.setattr(sys, "stderr", None)
    with guard_streams():
        assert isinstance(sys.stdout, SafeStream) and isinstance(sys.stderr, SafeStream)
        print("dropped")
        print("dropped", file=sys.stderr, flush=True)
        sys.stderr.write("dropped")
        with guard_streams():  # nested: not wrapped twice
            assert sys.stdout.stream is gone
    assert sys.stdout is gone and sys.stderr is None


SCRIPT = """
import importlib.util, os, sys

spec = importlib.util.spec_from_file_location("streams_under_test", {module!r})
streams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(streams)
guarded, result = sys.argv[1] == "guarded", sys.argv[2]


def work():
    for i in range(3000):  # far more than a pipe buffer holds
        print(f"progress line {{i}}", flush=True)
        sys.stderr.write(f"message {{i}}\\n")
        sys.stderr.flush()
    fd = os.open(result, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, f"finished; the result file got descriptor {{fd}}".encode())
    os.close(fd)


if guarded:
    with streams.guard_streams():
        work()
else:
    work()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
@pytest.mark.parametrize("guarded", [False, True])
def test_a_broken_pipe_does_not_stop_the_work(guarded: bool, tmp_path: Path) -> None:
    status, text, result = _shell(tmp_path, "2>&1 | head -1", guarded)
    if guarded:
        assert status == 0
        assert result.read_text().startswith("finished")
        assert text.strip() == "progress line 0"  # what head let through, and no traceback
    else:  # the same script unguarded dies at its first write after head left
        assert status != 0 and not result.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
@pytest.mark.parametrize("guarded", [False, True])
def test_a_closed_stderr_does_not_stop_the_work(guarded: bool, tmp_path: Path) -> None:
    status, _, result = _shell(tmp_path, "2>&-", guarded)
    if guarded:
        assert status == 0
        # The closed descriptor 2 was pointed at the null device: the file got another one.
        assert result.read_text() == "finished; the result file got descriptor 3"
    else:
        assert status != 0 and not result.exists()


def _shell(tmp_path: Path, redirection: str, guarded: bool) -> tuple[int, str, Path]:
    """Run the script as ``python talk.py MODE RESULT REDIRECTION`` in bash; its exit status
    (not that of ``head``), what reached the terminal, and the result file's path."""
    script = tmp_path / "talk.py"
    script.write_text(textwrap.dedent(SCRIPT.format(module=streams.__file__)))
    result = tmp_path / f"result-{guarded}.txt"
    mode = "guarded" if guarded else "plain"
    status_file = tmp_path / f"status-{guarded}"
    command = (
        f'"{sys.executable}" "{script}" {mode} "{result}" {redirection}; '
        f'echo "${{PIPESTATUS[0]}}" > "{status_file}"'
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    return int(status_file.read_text()), done.stdout + done.stderr, result
