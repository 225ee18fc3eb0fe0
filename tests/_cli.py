"""Helpers for the command-line tests: run ``risloss`` in-process, hash folders, a factory model."""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import pytest

from risloss.cli import main
from risloss.training import TrainConfig

# The tiny budget every test run uses.
TINY = [
    "--model", "resnet8_fashion_mnist", "--iters", "6", "--warmup", "2", "--eval-limit", "200",
    "--checkpoint-every", "2", "--batch-size", "8",
]  # fmt: skip


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``risloss ARGS`` in this process: the exit status, standard output and standard error."""
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


class RunStarted(Exception):
    """Raised in place of a run by :func:`config_of`: carries the run's configuration."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.config = config


def config_of(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TrainConfig:
    """The configuration ``risloss ARGS`` runs: its command line, up to the run, which a stub
    replaces (nothing is trained or read)."""

    def start(config: TrainConfig, *args: object, **kwargs: object) -> None:
        raise RunStarted(config)

    monkeypatch.setattr("risloss.training.train", start)
    monkeypatch.setattr("risloss.training.synthesize", start)
    with pytest.raises(RunStarted) as info:
        main([*args, "--out", str(tmp_path / "run"), "--quiet"])
    return info.value.config


def is_start_line(line: str) -> bool:
    """The line a run prints before its set-up: ``risloss quantize: MODEL ... -> OUT``."""
    return line.startswith("risloss ") and " iterations (" in line and " -> " in line


def one_line(err: str) -> str:
    """The error output, which must be exactly one line (after the start line, if any)."""
    lines = [line for line in err.strip().splitlines() if not is_start_line(line)]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err}"
    return lines[0]


def hashes(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (relative path -> SHA-256); folders too, as ``"<dir>"``."""
    found = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        found[key] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


_names = itertools.count()

FACTORY_SOURCE = """
import pathlib
import time

from torch import nn


class Net(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
        )


def factory():
    return Net()


def slow_factory():
    # Signals that start-up has reached the model, then blocks: a window for Ctrl-C.
    pathlib.Path(__file__).with_suffix(".ready").write_text("ready")
    time.sleep(120)
    return Net()
"""


def factory_module(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write an importable module with ``factory``/``slow_factory`` into ``folder``; its name."""
    name = f"risloss_cli_factory_{next(_names)}"
    (folder / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name
