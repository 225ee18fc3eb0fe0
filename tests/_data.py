"""Shared helpers for tests that need the Fashion-MNIST files."""

from __future__ import annotations

import os

import pytest

from risloss.data import DataFileError, load_dataset


def fashion_mnist_or_skip(split: str):
    """Load a Fashion-MNIST split; in CI a missing package is a failure, elsewhere a skip."""
    try:
        return load_dataset("fashion-mnist", split)
    except DataFileError as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"Fashion-MNIST is required in CI: {exc}") from exc
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
