"""Interrupting a training run with a real SIGINT, and checking that resuming it loses nothing.

The trainer reports each finished iteration to its progress line; :func:`sigint_after` hooks
that report to send the signal at a chosen iteration, so the run stops there through its own
signal handler, exactly as after Ctrl-C. :func:`assert_resume_matches_uninterrupted` runs a
configuration three times (whole; interrupted; resumed) and compares the outputs, of
:func:`~risloss.training.train` by default or of another run function with its signature
(:func:`~risloss.training.synthesize`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from risloss.training import TrainConfig, TrainingInterrupted, train
from risloss.training._progress import Progress


@contextmanager
def sigint_after(iteration: int, when: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Send SIGINT to this process once a run reports ``iteration`` done (if ``when()``).

    Args:
        iteration: the finished iteration after which the signal goes out.
        when: whether this process sends it (e.g. only rank 0 of a distributed run).
    """
    original = Progress.update

    def update(self: Progress, n: int, values: Any = None) -> None:
        original(self, n, values)
        if n == iteration and when():
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Progress, "update", update)
        yield


def load_state(path: Path) -> dict[str, Any]:
    """A saved state dict, loaded as the library's users load it."""
    return torch.load(path, weights_only=True)


def assert_same_state(a: Path, b: Path) -> None:
    """The two saved state dicts hold the same names and bitwise equal tensors."""
    first, second = load_state(a), load_state(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def assert_resume_matches_uninterrupted(
    config: TrainConfig,
    root: Path,
    at: int,
    *,
    run: Callable[..., dict[str, Any]] = train,
    same: Sequence[str] = ("history", "student_top1"),
    files: Sequence[str] = ("student.pt",),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``config`` whole, then interrupted after iteration ``at`` and resumed; compare.

    The resumed run must end with the same metrics ``same`` and the same saved ``files``
    (bitwise) as the uninterrupted one: by default the history, the accuracy and
    ``student.pt`` of :func:`~risloss.training.train`.

    Args:
        run: called as ``run(config, out_dir, log=None)`` (and ``resume=True``).

    Returns:
        The metrics of the uninterrupted and of the resumed run, for further checks.
    """
    full = run(config, root / "full", log=None)
    with sigint_after(at), pytest.raises(TrainingInterrupted) as info:
        run(config, root / "part", log=None)
    assert info.value.iteration == at
    assert load_state(root / "part" / "checkpoint.pt")["iteration"] == at
    resumed = run(config, root / "part", resume=True, log=None)
    for key in same:
        assert resumed[key] == full[key], key
    for name in files:
        assert_same_state(root / "full" / name, root / "part" / name)
    return full, resumed
