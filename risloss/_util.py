"""Small helpers shared across the package: listing names in messages, a model's device."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["listing", "model_device"]


def listing(names: Sequence[str], *, limit: int = 40, quote: bool = False) -> str:
    """``names`` joined by commas for an error message, cut after ``limit`` entries.

    Example:
        >>> from risloss._util import listing
        >>> listing(["a", "b", "c"], limit=2)
        'a, b, ... (1 more)'
        >>> listing([], quote=True)
        '(none)'
    """
    shown = ", ".join((repr(n) if quote else n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown or "(none)"


def model_device(model: nn.Module) -> torch.device:
    """The device of the first parameter (or buffer) of ``model``; the CPU when it has none.

    Example:
        >>> from torch import nn
        >>> from risloss._util import model_device
        >>> model_device(nn.Linear(2, 2)), model_device(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")
