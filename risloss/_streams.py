"""Messages that never stop a run: standard output and error may be closed or broken.

A run started as ``risloss quantize ... 2>&1 | head -1`` loses its reader after one line (a
write then fails with a broken pipe, ``EPIPE``), and one started with ``2>&-`` has no standard
error at all (``sys.stderr is None``). Neither is a reason to stop a run whose results go to
files. :func:`say` writes one message and drops it when the stream is gone; :func:`guard_streams`
puts a :class:`SafeStream` in place of ``sys.stdout`` and ``sys.stderr`` for everything else
that prints (progress lines, warnings), so no message can raise.

Once a standard stream broke, its file descriptor is pointed at the null device, so that
Python's final flush at exit does not fail (which would print a traceback and set the exit
status to 120). :func:`guard_streams` also points closed descriptors 0, 1 and 2 at the null
device: otherwise the next file the run opens would get descriptor 2, and anything written to
standard error by C code would land in it.

Example:
    >>> import io
    >>> from risloss._streams import SafeStream
    >>> class Gone(io.StringIO):
    ...     def write(self, text):
    ...         raise BrokenPipeError(32, "Broken pipe")
    >>> stream = SafeStream(Gone())
    >>> stream.write("progress 10%\\n"), stream.broken
    (13, True)
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, Literal, TextIO

__all__ = ["DEBUG_ENV", "SafeStream", "add_debug", "debug_requested", "guard_streams", "say"]

_GONE = frozenset({errno.EPIPE, errno.EBADF, errno.EIO, errno.ENOSPC, errno.EINVAL})
"""Write errors after which a message stream is given up (its reader left, it was closed, the
file behind it is full)."""


def _is_gone(exc: BaseException) -> bool:
    """Whether writing failed because the stream is gone (not a bug of the caller)."""
    if isinstance(exc, BrokenPipeError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _GONE
    return isinstance(exc, ValueError) and "closed file" in str(exc)  # "I/O on closed file"


def _silence(stream: Any) -> None:
    """Point a broken standard stream's descriptor at the null device (see the module)."""
    if stream is not None and stream in (sys.__stdout__, sys.__stderr__):
        try:
            fd = stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):
            return
        try:
            os.dup2(null, fd)
        except OSError:
            pass
        finally:
            os.close(null)


class SafeStream(io.TextIOBase):
    """A text stream that drops what it cannot write instead of raising.

    Writes go to ``stream``; once one fails because the stream is gone (a broken pipe, a
    closed descriptor or file, a full disk), :attr:`broken` is set and every later write is
    dropped. ``stream=None`` (a closed ``sys.stderr``) drops everything. Other errors (a
    write of a non-string) are raised as usual.

    Args:
        stream: the stream to write to, or ``None``.

    Attributes:
        stream: as given.
        broken: whether writes are being dropped.

    Example:
        >>> from risloss._streams import SafeStream
        >>> sink = SafeStream(None)
        >>> sink.write("lost"), sink.broken, sink.isatty()
        (4, True, False)
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self.stream = stream
        self.broken = stream is None

    def _give_up(self) -> None:
        self.broken = True
        _silence(self.stream)

    def write(self, text: str) -> int:
        """Write ``text`` (or drop it); returns ``len(text)`` either way."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not self.broken and self.stream is not None:
            try:
                self.stream.write(text)
            except (OSError, ValueError) as exc:
                if not _is_gone(exc):
                    raise
                self._give_up()
        return len(text)

    def flush(self) -> None:
        """Flush the stream (or nothing, once broken)."""
        if not self.broken and self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                if not _is_gone(exc):
                    raise
                self._give_up()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        """Whether the stream is a terminal (``False`` once broken)."""
        if self.broken or self.stream is None:
            return False
        try:
            return bool(self.stream.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        """The stream's descriptor (:class:`io.UnsupportedOperation` without one)."""
        if self.stream is None:
            raise io.UnsupportedOperation("the stream is closed")
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None) or "strict"

    def close(self) -> None:
        """Only marks this wrapper closed: the stream itself belongs to its owner."""
        super().close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller may look up on a text stream (name, mode, buffer, ...).
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)


def say(message: str, *, stream: Literal["stderr", "stdout"] = "stderr") -> bool:
    """Print ``message`` and a newline to ``sys.stderr`` (or ``sys.stdout``) and flush it;
    when the stream is closed or broken the message is dropped.

    Args:
        message: one line.
        stream: ``"stderr"`` or ``"stdout"``.

    Returns:
        Whether the message was written.

    Raises:
        ValueError: another ``stream``.

    Example:
        >>> import sys
        >>> from risloss._streams import say
        >>> say("hello", stream="stdout")
        hello
        True
    """
    if stream not in ("stderr", "stdout"):
        raise ValueError(f"stream must be one of ('stderr', 'stdout'), got {stream!r}")
    target = getattr(sys, stream)
    if target is None or getattr(target, "broken", False):
        return False
    try:
        target.write(f"{message}\n")
        target.flush()
    except (OSError, ValueError) as exc:
        if not _is_gone(exc):
            raise
        _silence(target)
        return False
    return not getattr(target, "broken", False)


def _reopen_closed_descriptors() -> None:
    """Point closed descriptors 0, 1 and 2 at the null device (see the module)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


@contextlib.contextmanager
def guard_streams() -> Iterator[None]:
    """Within the block, ``sys.stdout`` and ``sys.stderr`` are :class:`SafeStream` wrappers of
    the streams before it (``None`` becomes a stream that drops everything); after it, the
    streams before it are back. Closed descriptors 0, 1 and 2 are pointed at the null device
    for good (see the module).

    Example:
        >>> import sys
        >>> from risloss._streams import SafeStream, guard_streams
        >>> with guard_streams():
        ...     isinstance(sys.stderr, SafeStream)
        True
        >>> isinstance(sys.stderr, SafeStream)
        False
    """
    _reopen_closed_descriptors()
    saved = sys.stdout, sys.stderr
    wrap = [s if isinstance(s, SafeStream) else SafeStream(s) for s in saved]
    sys.stdout, sys.stderr = wrap[0], wrap[1]
    try:
        yield
    finally:
        for stream in wrap:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = saved


DEBUG_ENV = "RISLOSS_DEBUG"
"""The environment variable that shows the traceback behind every command's error message."""
_TRUE = ("1", "true", "yes", "on", "y")


def debug_requested(args: Any = None) -> bool:
    """``--debug`` (``args.debug``), or ``RISLOSS_DEBUG`` set to ``1``, ``true``, ``yes``, ``on``
    or ``y`` in any case (``0``, ``false``, ``no``, ``off`` and an empty value leave it off).

    Example:
        >>> import os
        >>> from risloss._streams import debug_requested
        >>> os.environ["RISLOSS_DEBUG"] = "false"
        >>> debug_requested()
        False
        >>> del os.environ["RISLOSS_DEBUG"]
    """
    if args is not None and getattr(args, "debug", False):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in _TRUE


def add_debug(parser: Any) -> None:
    """Give a command's ``argparse`` parser the ``--debug`` option."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback behind an error message (or set {DEBUG_ENV}=1)",
    )
