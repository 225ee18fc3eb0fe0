"""The single ``reduction=`` argument shared by every loss."""

from __future__ import annotations

from typing import Literal, get_args

import torch

__all__ = ["REDUCTIONS", "Reduction", "reduce"]

Reduction = Literal["mean", "sum", "none"]
"""How per-sample values are combined: their mean, their sum, or not at all."""

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
"""The accepted values of ``reduction`` (the members of :data:`Reduction`)."""


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample ``values`` (any shape) to a scalar, or return them unchanged.

    ``reduction`` must already be validated (one of :data:`REDUCTIONS`).
    """
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values
