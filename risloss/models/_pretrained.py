"""Teachers shipped inside the package: weights plus a metadata file each."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from torch import nn

from risloss._checkpoint import load_checkpoint
from risloss.models._registry import ARCHITECTURES

__all__ = ["DEFAULT_TEACHER", "list_pretrained", "load_pretrained", "pretrained_info"]

DEFAULT_TEACHER = "resnet20_fashion_mnist"
"""The teacher every command uses unless told otherwise."""


def _weights_dir() -> Any:
    return resources.files("risloss.models") / "weights"


def list_pretrained() -> dict[str, dict[str, Any]]:
    """Describe every shipped teacher: name -> metadata (data set, input shape, test accuracy...).

    Returns:
        ``{name: metadata}`` for every teacher in the package, without the training history
        (see :func:`pretrained_info` for it).

    Example:
        >>> from risloss.models import list_pretrained
        >>> "resnet20_fashion_mnist" in list_pretrained()
        True
    """
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(_weights_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            meta = json.loads(entry.read_text())
            meta.pop("history", None)
            out[entry.name[: -len(".json")]] = meta
    return out


def pretrained_info(name: str) -> dict[str, Any]:
    """The full metadata of one shipped teacher (including its training history).

    Args:
        name: one of :func:`list_pretrained`'s keys.

    Returns:
        The metadata: architecture, data set, input shape, preprocessing, training
        hyperparameters, per-epoch ``history`` and final ``test_top1``.

    Raises:
        ValueError: ``name`` is not a shipped teacher (the message lists them).

    Example:
        >>> from risloss.models import pretrained_info
        >>> info = pretrained_info("resnet8_fashion_mnist")
        >>> info["arch"], info["input_shape"], len(info["history"]) == info["epochs"]
        ('resnet8', [1, 28, 28], True)
    """
    names = sorted(list_pretrained())
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    meta: dict[str, Any] = json.loads((_weights_dir() / f"{name}.json").read_text())
    return meta


def load_pretrained(name: str = DEFAULT_TEACHER) -> nn.Module:
    """Build a shipped teacher and load its weights (``weights_only=True``), in eval mode.

    Args:
        name: one of :func:`list_pretrained`'s keys.

    Raises:
        ValueError: ``name`` is not a shipped teacher (the message lists them).

    Example:
        >>> from risloss.models import load_pretrained
        >>> teacher = load_pretrained("resnet8_fashion_mnist")
        >>> teacher.training
        False
    """
    meta = pretrained_info(name)
    c, h, _ = meta["input_shape"]
    model = ARCHITECTURES[meta["arch"]](
        num_classes=meta["num_classes"], in_channels=c, image_size=h
    )
    with resources.as_file(_weights_dir() / f"{name}.pt") as path:
        model.load_state_dict(load_checkpoint(path))
    return model.eval()
