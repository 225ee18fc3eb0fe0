"""Atomic checkpoint files that load with ``torch.load(..., weights_only=True)``.

Every file the library reads with :func:`torch.load` (weights, checkpoints) goes through
:func:`load_checkpoint`, which turns any failure into one :class:`FileContentError` line that
names the file and what it should have held.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "FileContentError",
    "atomic_save",
    "atomic_write",
    "load_checkpoint",
    "load_state_dict_into",
    "state_dict_mismatch",
]


class FileContentError(ValueError):
    """A file that is missing, unreadable, or does not hold what it should.

    The message is one line: the file, what was expected and what is wrong.

    Example:
        >>> from risloss._checkpoint import load_checkpoint
        >>> try:
        ...     load_checkpoint("no-such-file.pt", expected="a state dict")
        ... except ValueError as err:
        ...     print(err)
        cannot load no-such-file.pt (expected a state dict): no such file
    """


class CheckpointMismatchError(ValueError):
    """A checkpoint written by a run with other settings, so it cannot be continued.

    Args:
        path: the checkpoint.
        fields: the settings that differ.

    Example:
        >>> from pathlib import Path
        >>> from risloss._checkpoint import CheckpointMismatchError
        >>> err = CheckpointMismatchError(Path("teacher.ckpt"), ["arch"])
        >>> err.fields, str(err)
        (['arch'], 'teacher.ckpt was written by a run with other settings (arch)')
    """

    def __init__(self, path: Path, fields: list[str]) -> None:
        super().__init__(f"{path} was written by a run with other settings ({', '.join(fields)})")
        self.path = path
        self.fields = fields


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(file)`` so that ``path`` is never left half-written.

    ``write`` fills a temporary file in the same folder, which is flushed to disk and renamed
    over ``path`` (an atomic replace on POSIX and Windows); on any error the temporary file is
    removed and ``path`` is as it was. The file's permissions follow the umask, as for a file
    that :func:`open` creates.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError, AttributeError):  # as open() would make it
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` with :func:`torch.save` so that ``path`` is never left half-written
    (see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split("\n", 1)[0].split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in words a user can act on."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            return (
                f"it holds pickled Python objects ({found.group(1)}): save model.state_dict(), "
                "not the model"
            )
        return "it is not a file written by torch.save"
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, OSError):
        return exc.strerror or _first_line(text)
    if isinstance(exc, RuntimeError) and ("PytorchStreamReader" in text or "zip" in text):
        return "it is truncated or not a file written by torch.save"
    return f"it is not a file written by torch.save ({type(exc).__name__}: {_first_line(text)})"


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"a dictionary with keys {_first_line(str(sorted(map(str, obj)))[:80])}"
    return f"a {type(obj).__name__}"


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    expected: str = "a file written by torch.save",
    keys: Iterable[str] = (),
) -> Any:
    """Load a file written by :func:`atomic_save` (or :func:`torch.save`) without running code.

    Args:
        path: the file.
        map_location: as in :func:`torch.load`.
        expected: what the file should hold, for the error message.
        keys: entries a dictionary must have (none: any content is accepted).

    Returns:
        The loaded object.

    Raises:
        FileContentError: a missing, empty, truncated or foreign file, pickled Python objects
            other than tensors, or content without ``keys``; one line naming ``path``.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from risloss._checkpoint import atomic_save, load_checkpoint
        >>> path = Path(tempfile.mkdtemp()) / "state.pt"
        >>> atomic_save({"step": 3}, path)
        >>> load_checkpoint(path, keys=["step"])
        {'step': 3}
        >>> path.write_bytes(b"")
        0
        >>> try:
        ...     load_checkpoint(path, expected="a checkpoint")
        ... except ValueError as err:
        ...     print(str(err).replace(str(path), "state.pt"))
        cannot load state.pt (expected a checkpoint): the file is empty or truncated
    """
    where = f"cannot load {os.fspath(path)} (expected {expected})"
    path = Path(path)
    if not path.exists():
        raise FileContentError(f"{where}: no such file")
    if path.is_dir():
        raise FileContentError(f"{where}: it is a folder")
    if not path.is_file():  # a named pipe or a device: reading it could hang
        raise FileContentError(f"{where}: it is not a regular file (a pipe or a device)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about pickle protocols
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise FileContentError(f"{where}: {_reason(exc)}") from exc
    required = list(keys)
    if required:
        if not isinstance(obj, Mapping):
            raise FileContentError(f"{where}: it holds {_describe(obj)}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise FileContentError(f"{where}: it has no {', '.join(map(repr, missing))} entry")
    return obj


def state_dict_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """What keeps ``model.load_state_dict(state)`` from working, in one line (``None``: it fits).

    Example:
        >>> from torch import nn
        >>> from risloss._checkpoint import state_dict_mismatch
        >>> state_dict_mismatch(nn.Linear(2, 3), nn.Linear(2, 3).state_dict()) is None
        True
        >>> state_dict_mismatch(nn.Linear(2, 3), nn.Linear(2, 4).state_dict())
        '2 shape mismatch(es): weight (4, 2) in the file, (3, 2) in the model; ...'
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for label, items in (
        ("missing key(s)", missing),
        ("unexpected key(s)", unexpected),
        ("shape mismatch(es)", shapes),
    ):
        if items:
            more = "; ..." if len(items) > 1 else ""
            parts.append(f"{len(items)} {label}: {items[0]}{more}")
    return "; ".join(parts) or None


def load_state_dict_into(model: nn.Module, path: str | os.PathLike[str], what: str) -> None:
    """Load the state dict in ``path`` into ``model``; any problem is one line naming the file.

    A dictionary holding the state dict under ``"state_dict"`` is accepted too.

    Args:
        model: the model to fill.
        path: a file written by ``torch.save(model.state_dict(), path)``.
        what: the model, for messages (``"model 'pkg.mod:factory'"``).

    Raises:
        FileContentError: an unreadable file, content that is not a state dict, or a state
            dict that does not fit ``model``.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from torch import nn
        >>> from risloss._checkpoint import load_state_dict_into
        >>> path = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save(nn.Linear(2, 3).state_dict(), path)
        >>> load_state_dict_into(nn.Linear(2, 3), path, "a linear layer")
        >>> torch.save(torch.zeros(3), path)
        >>> try:
        ...     load_state_dict_into(nn.Linear(2, 3), path, "a linear layer")
        ... except ValueError as err:
        ...     print(str(err).split(": ", 1)[1])
        it holds a single tensor of shape (3,)
    """
    expected = f"the state dict of {what}, as torch.save(model.state_dict(), file) writes it"
    state = load_checkpoint(path, expected=expected)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    where = f"cannot load {os.fspath(path)} (expected {expected})"
    if not (
        isinstance(state, Mapping)
        and all(
            isinstance(k, str) and (isinstance(v, torch.Tensor) or k.endswith("_extra_state"))
            for k, v in state.items()
        )
    ):
        raise FileContentError(f"{where}: it holds {_describe(state)}")
    problem = state_dict_mismatch(model, state)
    if problem is not None:
        raise FileContentError(f"{os.fspath(path)} does not fit {what}: {problem}")
    bad = [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FileContentError(
            f"{os.fspath(path)}: the weights of {what} hold NaN or infinite values, in "
            f"{bad[0]}{more}; the file is corrupt or the training that wrote it diverged"
        )
    model.load_state_dict(state)
