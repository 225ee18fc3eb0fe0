"""Feature-level inconsistency: a distance between two batches of feature maps."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from risloss.functional._checks import check_choice, check_pair
from risloss.functional._reduction import REDUCTIONS, Reduction, reduce

__all__ = ["FEATURE_KINDS", "FeatureKind", "feature_inconsistency"]

FeatureKind = Literal["cosine", "mse", "l1", "nmse"]
"""Feature distances accepted by :func:`feature_inconsistency`."""

FEATURE_KINDS: tuple[str, ...] = get_args(FeatureKind)
"""The accepted values of ``kind`` (the members of :data:`FeatureKind`)."""

_EPS = 1e-8
"""Lower bound on a feature vector's L2 norm in ``"cosine"`` and ``"nmse"``."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, D) divided by ``max(||row||_2, eps)``; zero rows stay zero."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / norm.clamp_min(_EPS)


def feature_inconsistency(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    kind: FeatureKind = "cosine",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Per-sample distance between two batches of features of the same shape.

    Each sample's trailing dimensions are flattened to a vector of ``D`` features,
    :math:`a_i, b_i \in \mathbb{R}^D`. With :math:`\hat a = a / \max(\|a\|_2, \epsilon)`
    (:math:`\epsilon = 10^{-8}`):

    - ``"cosine"``: the cosine distance :math:`1 - \cos(a_i, b_i)` (the paper's choice),
      computed as :math:`\tfrac12 \|\hat a_i - \hat b_i\|^2`, which equals it for non-zero
      vectors, has no cancellation error for nearly parallel ones, is 0 for identical inputs
      (two zero vectors included) and :math:`\tfrac12` for a zero vector against a non-zero
      one; in :math:`[0, 2]`;
    - ``"mse"``: :math:`\frac1D \sum_d (a_{id} - b_{id})^2`;
    - ``"l1"``: :math:`\frac1D \sum_d |a_{id} - b_{id}|`;
    - ``"nmse"``: :math:`\frac1D \sum_d (\hat a_{id} - \hat b_{id})^2`, that is
      ``2 * cosine / D``: the same geometry, scaled by the feature width.

    ``"cosine"`` and ``"nmse"`` ignore the scale of each feature vector; ``"mse"`` and ``"l1"``
    do not.

    Args:
        a: features ``(B, ...)`` with at least one feature dimension.
        b: features of the same shape.
        kind: ``"cosine"``, ``"mse"``, ``"l1"`` or ``"nmse"``.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"``.

    Returns:
        A scalar, or with ``reduction="none"`` a tensor of shape ``(B,)``.

    Raises:
        ValueError: an unknown ``kind`` or ``reduction``, inputs of different shapes, inputs
            with fewer than 2 dimensions or no elements, or a non-floating dtype.
        NonFiniteInputError: an input holds ``NaN`` or ``Inf``.
        TypeError: an input is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import feature_inconsistency
        >>> a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> feature_inconsistency(a, a, reduction="none")
        tensor([0., 0.])
        >>> feature_inconsistency(a, -a).item()
        2.0
        >>> feature_inconsistency(a, torch.zeros_like(a), kind="mse", reduction="none")
        tensor([0.5000, 2.0000])
    """
    check_choice(kind, "kind", FEATURE_KINDS)
    check_choice(reduction, "reduction", REDUCTIONS)
    check_pair(
        a, b, ("a", "b"), min_dim=2, shape="shape (B, ...) with at least one feature dimension"
    )

    a_flat = a.reshape(a.shape[0], -1)
    b_flat = b.reshape(b.shape[0], -1)
    if kind == "cosine":
        values = 0.5 * (_unit(a_flat) - _unit(b_flat)).square().sum(dim=1)
    elif kind == "mse":
        values = (a_flat - b_flat).square().mean(dim=1)
    elif kind == "l1":
        values = (a_flat - b_flat).abs().mean(dim=1)
    else:  # "nmse"
        values = (_unit(a_flat) - _unit(b_flat)).square().mean(dim=1)
    return reduce(values, reduction)
