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


def cifar10_or_skip(split: str):
    """Load a CIFAR-10 split (``RISLOSS_CIFAR10``, else ``data/cifar10``); a skip when absent.

    CIFAR-10 cannot be installed from a package, so CI runs without it.
    """
    try:
        return load_dataset("cifar10", split)
    except DataFileError as exc:
        pytest.skip(f"CIFAR-10 not found: {exc}")


def write_cifar_files(folder, per_class: int = 2, seed: int = 0) -> None:
    """A tiny CIFAR-10 as image files: ``folder/{train,test}/<class>/NNNN.png``, 32x32 RGB,
    each class a different mean colour (so a model can learn them)."""
    import numpy as np
    from PIL import Image

    from risloss.data import CIFAR10_CLASSES

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label, name in enumerate(CIFAR10_CLASSES):
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.array([25 * label, 255 - 25 * label, 128], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(target / f"{i:04d}.png")
