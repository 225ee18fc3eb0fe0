"""Module twin of :func:`risloss.functional.label_correlation_penalty`."""

from __future__ import annotations

import torch

from risloss._validators import one_of, positive
from risloss.functional._correlation import (
    CORRELATION_KINDS,
    PAIR_SELECTIONS,
    CorrelationKind,
    PairSelection,
    label_correlation_penalty,
)
from risloss.functional._reduction import REDUCTIONS, Reduction
from risloss.losses._options import OptionsModule, option

__all__ = ["LabelCorrelationPenalty"]


class LabelCorrelationPenalty(OptionsModule):
    """Penalty on correlated predictions within a batch (diversity in label space).

    Holds a validated configuration and calls
    :func:`~risloss.functional.label_correlation_penalty`, which documents the maths. The
    configuration is read-only.

    Args:
        pairs: ``"all"`` (default), ``"same"`` or ``"different"``; the last two need labels.
        kind: ``"relu"`` (default), ``"raw"``, ``"abs"`` or ``"square"``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - Inputs: ``logits`` ``(B, C)``, optional ``labels`` ``(B,)`` or ``(B, C)``.
        - Output: a scalar, or ``(B,)`` with ``reduction="none"``.

    Raises:
        ValueError: an unknown ``pairs``, ``kind`` or ``reduction``, or a non-positive
            ``temperature``.

    Example:
        >>> import torch
        >>> from risloss.losses import LabelCorrelationPenalty
        >>> penalty = LabelCorrelationPenalty(pairs="same")
        >>> logits = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
        >>> round(penalty(logits, torch.tensor([0, 0, 1])).item(), 4)
        1.0
    """

    pairs: PairSelection = option(one_of(PAIR_SELECTIONS))
    """Which sample pairs are penalized."""
    kind: CorrelationKind = option(one_of(CORRELATION_KINDS))
    """How a correlation becomes a penalty."""
    temperature: float = option(positive, convert=float)
    """The softmax temperature."""
    reduction: Reduction = option(one_of(REDUCTIONS))
    """The reduction over pairs."""

    def __init__(
        self,
        pairs: PairSelection = "all",
        kind: CorrelationKind = "relu",
        temperature: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self._configure(pairs=pairs, kind=kind, temperature=temperature, reduction=reduction)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Correlation penalty of the batch ``logits`` (labels select pairs).

        Args:
            logits: ``(B, C)``.
            labels: ``(B,)`` class indices or ``(B, C)`` soft labels; required unless
                ``pairs="all"``.

        Returns:
            As :func:`~risloss.functional.label_correlation_penalty`.
        """
        return label_correlation_penalty(
            logits,
            labels,
            pairs=self.pairs,
            kind=self.kind,
            temperature=self.temperature,
            reduction=self.reduction,
        )
