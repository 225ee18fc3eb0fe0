"""Module twin of :func:`risloss.functional.label_correlation_penalty`."""

from __future__ import annotations

import torch
from torch import nn

from risloss.functional._checks import check_choice, check_temperature
from risloss.functional._correlation import (
    CORRELATION_KINDS,
    PAIR_SELECTIONS,
    CorrelationKind,
    PairSelection,
    label_correlation_penalty,
)
from risloss.functional._reduction import REDUCTIONS, Reduction

__all__ = ["LabelCorrelationPenalty"]


class LabelCorrelationPenalty(nn.Module):
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

    def __init__(
        self,
        pairs: PairSelection = "all",
        kind: CorrelationKind = "relu",
        temperature: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_choice(pairs, "pairs", PAIR_SELECTIONS)
        check_choice(kind, "kind", CORRELATION_KINDS)
        check_choice(reduction, "reduction", REDUCTIONS)
        self._pairs: PairSelection = pairs
        self._kind: CorrelationKind = kind
        self._temperature = check_temperature(temperature)
        self._reduction: Reduction = reduction

    @property
    def pairs(self) -> PairSelection:
        """Which sample pairs are penalized."""
        return self._pairs

    @property
    def kind(self) -> CorrelationKind:
        """How a correlation becomes a penalty."""
        return self._kind

    @property
    def temperature(self) -> float:
        """The softmax temperature."""
        return self._temperature

    @property
    def reduction(self) -> Reduction:
        """The reduction over pairs."""
        return self._reduction

    def extra_repr(self) -> str:
        return (
            f"pairs={self._pairs!r}, kind={self._kind!r}, temperature={self._temperature}, "
            f"reduction={self._reduction!r}"
        )

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
            pairs=self._pairs,
            kind=self._kind,
            temperature=self._temperature,
            reduction=self._reduction,
        )
