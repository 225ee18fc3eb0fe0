"""Atomic checkpoint files that load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "load_checkpoint"]


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` with :func:`torch.save` so that ``path`` is never left half-written.

    The object is written to a temporary file in the same folder, flushed to disk and renamed
    over ``path`` (an atomic replace on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """Load a file written by :func:`atomic_save` without executing pickled code."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
