"""Small helpers shared across the package: listing names in messages, a model's device, the
machine a run is made on."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["listing", "machine_info", "model_device"]


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


def machine_info() -> dict[str, object]:
    """Where a run is made: the CPU model, the CPU kernel level torch dispatches to
    (``torch.backends.cpu.get_cpu_capability()``) and torch's thread count.

    A run is bitwise reproducible only where all three match (and the software does): the same
    seed on another CPU moves a result by up to about a point.

    Example:
        >>> from risloss._util import machine_info
        >>> sorted(machine_info())
        ['cpu', 'cpu_capability', 'threads']
    """
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
