"""The output folder and the device of a command, checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from risloss._outputs import RUN_FILES, RUN_MARKERS

__all__ = [
    "RUN_MARKERS",
    "RUN_OUTPUTS",
    "CommandError",
    "check_device",
    "check_out",
    "stamp",
    "writable_folder",
]

RUN_OUTPUTS = RUN_FILES
"""The files a run writes (see :data:`risloss._outputs.RUN_FILES`)."""


class CommandError(Exception):
    """Stop the command: print ``message`` (one line) and exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


def writable_folder(path: Path, label: str) -> None:
    """Refuse ``path`` as an output folder unless it is (or can be made) a writable folder.

    Writes and removes a probe file in ``path`` or in its nearest existing parent, so nothing
    is left behind: the run creates the folder when it starts writing.
    """
    probe = path
    try:
        if path.exists() and not path.is_dir():
            raise CommandError(f"{label}: {path} is a file, not a folder")
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise CommandError(f"{label}: {probe} is a file, so no folder can be made in it")
        fd, name = tempfile.mkstemp(prefix=".risloss-write-test-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise CommandError(f"{label}: cannot write in {probe} ({exc.strerror or exc})") from exc


def check_out(out: str, *, resume: bool, overwrite: bool) -> Path:
    """The output folder ``--out``: a writable folder, and holding no run unless ``resume``
    or ``overwrite`` says what to do with it.

    A first look, on every process of a run; what the folder holds is decided again under
    its lock when the main process claims it (:func:`risloss._outputs.claim_output`).
    """
    if not out.strip():
        raise CommandError("--out: expected an output folder, got an empty name")
    path = Path(out)
    writable_folder(path, f"--out {out}")
    held = [name for name in RUN_MARKERS if (path / name).exists()]
    if held and not (resume or overwrite):
        raise CommandError(
            f"--out {out} already holds a run ({', '.join(held)}): continue it with --resume, "
            "or start over with --overwrite"
        )
    return path


def check_device(name: str) -> None:
    """Refuse a device this machine does not have (the name itself is TrainConfig's to check)."""
    import torch

    dev = torch.device(name)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CommandError(
                f"--device {name}: no CUDA GPU is available (torch {torch.__version__})"
            )
        if dev.index is not None and dev.index >= count:
            raise CommandError(
                f"--device {name}: {count} GPU(s) visible, cuda:0 to cuda:{count - 1}"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(
            f"--device {name}: MPS is not available on this machine or build of torch"
        )


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What identifies a file's version (``None`` if there is none)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
