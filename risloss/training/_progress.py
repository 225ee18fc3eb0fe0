"""A dependency-free progress line: iterations, current losses, rate and ETA."""

from __future__ import annotations

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
    """Redraw one status line on a terminal; silent when ``enabled`` is false.

    By default it is enabled only when ``stream`` is attached to a terminal, so logs and CI
    output stay clean.
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
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total
        self.start = start
        self.n = start
        self.desc = desc
        self.min_interval = min_interval
        self._t0 = time.monotonic()
        self._last = 0.0

    def update(self, n: int, values: Mapping[str, float] | None = None) -> None:
        self.n = n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval and n < self.total:
            return
        self._last = now
        done = n - self.start
        elapsed = now - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - n) / rate if rate > 0 else 0.0
        width = 20
        filled = int(width * n / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        losses = " ".join(f"{k}={v:.3g}" for k, v in (values or {}).items())
        line = (
            f"\r{self.desc} [{bar}] {n}/{self.total} {rate:.2f} it/s "
            f"elapsed {_fmt_seconds(elapsed)} eta {_fmt_seconds(eta)} {losses}"
        )
        self.stream.write(line[:200].ljust(80))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
