"""A dependency-free progress report: iterations, current losses, rate and ETA."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["Progress"]


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Report a run's progress on ``stream``.

    On a terminal one status line is redrawn (at most every ``min_interval`` seconds). Off a
    terminal (a log file, CI) nothing is redrawn: a plain line is written each time another
    ``fraction`` of the run is done, or ``every`` seconds after the previous line if that comes
    first, so a long run shows that it is alive without flooding the log.

    Args:
        total: the last iteration.
        start: the first iteration (a resumed run starts later).
        desc: the label at the start of each line.
        enabled: ``None`` (the default): only on a terminal; ``True``: also off a terminal,
            as plain lines; ``False``: silent.
        stream: where to write (default: standard error).
        min_interval: seconds between redraws on a terminal.
        fraction: part of the run between two plain lines.
        every: seconds after which a plain line is written even before the next ``fraction``.

    Example:
        >>> import io
        >>> from risloss.training._progress import Progress
        >>> out = io.StringIO()
        >>> bar = Progress(50, desc="quantize/ris", enabled=True, stream=out)
        >>> for i in range(1, 51):
        ...     bar.update(i, {"s_loss": 0.5})
        >>> len(out.getvalue().splitlines())  # one line per 10% of the run
        10
        >>> out.getvalue().splitlines()[0].split(",")[0]
        'quantize/ris: 5/50 (10%)'
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        desc: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        min_interval: float = 0.2,
        fraction: float = 0.1,
        every: float = 60.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = self.stream.isatty()
        self.enabled = isatty if enabled is None else enabled
        self.redraw = isatty
        self.total = total
        self.start = start
        self.n = start
        self.desc = desc
        self.min_interval = min_interval
        self.every = every
        self._step = max(1, math.ceil(total * fraction))
        self._next = (start // self._step + 1) * self._step
        self._t0 = time.monotonic()
        self._last = 0.0 if self.redraw else self._t0

    def _stats(self, n: int, now: float) -> tuple[float, float, float]:
        elapsed = now - self._t0
        rate = (n - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - n) / rate if rate > 0 else 0.0
        return elapsed, rate, eta

    def update(self, n: int, values: Mapping[str, float] | None = None) -> None:
        self.n = n
        if not self.enabled:
            return
        now = time.monotonic()
        losses = " ".join(f"{k}={v:.3g}" for k, v in (values or {}).items())
        if not self.redraw:
            if n < min(self._next, self.total) and now - self._last < self.every:
                return
            self._last = now
            self._next = (n // self._step + 1) * self._step
            elapsed, rate, eta = self._stats(n, now)
            self.stream.write(
                f"{self.desc}: {n}/{self.total} ({100 * n // max(self.total, 1)}%), "
                f"{rate:.2f} it/s, elapsed {_fmt_seconds(elapsed)}, eta {_fmt_seconds(eta)}"
                f"{', ' + losses if losses else ''}\n"
            )
            self.stream.flush()
            return
        if now - self._last < self.min_interval and n < self.total:
            return
        self._last = now
        elapsed, rate, eta = self._stats(n, now)
        width = 20
        filled = int(width * n / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"\r{self.desc} [{bar}] {n}/{self.total} {rate:.2f} it/s "
            f"elapsed {_fmt_seconds(elapsed)} eta {_fmt_seconds(eta)} {losses}"
        )
        self.stream.write(line[:200].ljust(80))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.redraw:
            self.stream.write("\n")
            self.stream.flush()
