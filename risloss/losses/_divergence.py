"""Module twin of :func:`risloss.functional.prediction_divergence`."""

from __future__ import annotations

import torch

from risloss._validators import one_of, positive
from risloss.functional._divergence import (
    DIVERGENCE_KINDS,
    DivergenceKind,
    prediction_divergence,
)
from risloss.functional._reduction import REDUCTIONS, Reduction
from risloss.losses._options import OptionsModule, option

__all__ = ["PredictionDivergence"]


class PredictionDivergence(OptionsModule):
    """Divergence between the softmax distributions of two sets of logits.

    Holds a validated configuration and calls
    :func:`~risloss.functional.prediction_divergence`, which documents the maths. The
    configuration is read-only.

    Args:
        kind: ``"l1"`` (default, the paper's choice), ``"kl"``, ``"skl"`` or ``"js"``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - Inputs: ``p_logits`` and ``q_logits`` of shape ``(..., C)``.
        - Output: a scalar, or ``(...)`` with ``reduction="none"``.

    Raises:
        ValueError: an unknown ``kind`` or ``reduction``, or a non-positive ``temperature``.

    Example:
        >>> import torch
        >>> from risloss.losses import PredictionDivergence
        >>> loss = PredictionDivergence(kind="js", temperature=2.0)
        >>> loss
        PredictionDivergence(kind='js', temperature=2.0, reduction='mean')
        >>> x = torch.randn(4, 10)
        >>> loss(x, x).item()
        0.0
    """

    kind: DivergenceKind = option(one_of(DIVERGENCE_KINDS))
    """The divergence."""
    temperature: float = option(positive, convert=float)
    """The softmax temperature."""
    reduction: Reduction = option(one_of(REDUCTIONS))
    """The reduction over samples."""

    def __init__(
        self,
        kind: DivergenceKind = "l1",
        temperature: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self._configure(kind=kind, temperature=temperature, reduction=reduction)

    def forward(self, p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
        """Divergence of ``softmax(p_logits / T)`` from ``softmax(q_logits / T)``.

        Args:
            p_logits: logits ``(..., C)``; the first distribution.
            q_logits: logits of the same shape; the second distribution.

        Returns:
            As :func:`~risloss.functional.prediction_divergence`.
        """
        return prediction_divergence(
            p_logits,
            q_logits,
            kind=self.kind,
            temperature=self.temperature,
            reduction=self.reduction,
        )
