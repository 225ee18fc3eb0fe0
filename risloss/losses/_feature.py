"""Module twin of :func:`risloss.functional.feature_inconsistency`."""

from __future__ import annotations

import torch

from risloss._validators import one_of
from risloss.functional._feature import FEATURE_KINDS, FeatureKind, feature_inconsistency
from risloss.functional._reduction import REDUCTIONS, Reduction
from risloss.losses._options import OptionsModule, option

__all__ = ["FeatureInconsistency"]


class FeatureInconsistency(OptionsModule):
    """Per-sample distance between two batches of features.

    Holds a validated configuration and calls
    :func:`~risloss.functional.feature_inconsistency`, which documents the maths. The
    configuration is read-only.

    Args:
        kind: ``"cosine"`` (default, the paper's choice), ``"mse"``, ``"l1"`` or ``"nmse"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - Inputs: ``a`` and ``b`` of shape ``(B, ...)``.
        - Output: a scalar, or ``(B,)`` with ``reduction="none"``.

    Raises:
        ValueError: an unknown ``kind`` or ``reduction``.

    Example:
        >>> import torch
        >>> from risloss.losses import FeatureInconsistency
        >>> loss = FeatureInconsistency(kind="cosine", reduction="none")
        >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> loss(a, torch.tensor([[0.0, 1.0], [2.0, 2.0]])).round(decimals=4)
        tensor([1., 0.])
    """

    kind: FeatureKind = option(one_of(FEATURE_KINDS))
    """The feature distance."""
    reduction: Reduction = option(one_of(REDUCTIONS))
    """The reduction over samples."""

    def __init__(self, kind: FeatureKind = "cosine", reduction: Reduction = "mean") -> None:
        super().__init__()
        self._configure(kind=kind, reduction=reduction)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance between ``a`` and ``b``, per sample, then reduced.

        Args:
            a: features ``(B, ...)``.
            b: features of the same shape.

        Returns:
            As :func:`~risloss.functional.feature_inconsistency`.
        """
        return feature_inconsistency(a, b, kind=self.kind, reduction=self.reduction)
