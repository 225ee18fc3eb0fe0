"""Diversity in label space: a penalty on correlated predictions within a batch."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from risloss.functional._checks import (
    check_choice,
    check_finite,
    check_floating,
    check_temperature,
)
from risloss.functional._reduction import REDUCTIONS, Reduction

__all__ = [
    "CORRELATION_KINDS",
    "PAIR_SELECTIONS",
    "CorrelationKind",
    "PairSelection",
    "label_correlation_penalty",
    "prediction_correlation",
]

PairSelection = Literal["all", "same", "different"]
"""Which sample pairs :func:`label_correlation_penalty` penalizes."""

CorrelationKind = Literal["relu", "raw", "abs", "square"]
"""How :func:`label_correlation_penalty` turns a correlation into a penalty."""

PAIR_SELECTIONS: tuple[str, ...] = get_args(PairSelection)
"""The accepted values of ``pairs`` (the members of :data:`PairSelection`)."""

CORRELATION_KINDS: tuple[str, ...] = get_args(CorrelationKind)
"""The accepted values of ``kind`` (the members of :data:`CorrelationKind`)."""

_EPS = 1e-6
"""Centred rows with an L2 norm below this are treated as constant (correlation 0)."""


def _correlation_matrix(probs: torch.Tensor) -> torch.Tensor:
    """``R = Z Z^T`` for the centred, eps-normalized rows ``Z`` of ``probs`` (B, C)."""
    centred = probs - probs.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    z = centred / norm.clamp_min(_EPS)
    return z @ z.transpose(0, 1)


def prediction_correlation(probs: torch.Tensor) -> torch.Tensor:
    r"""Pearson correlation matrix of the rows of ``probs``.

    Each row is centred over its ``C`` entries and divided by
    :math:`\max(\|\cdot\|_2, 10^{-6})`; :math:`R = Z Z^\top`. A (numerically) constant row, such
    as a uniform prediction, has correlation 0 with every row, itself included. Works on any
    rows: probabilities, soft label vectors, logits.

    Args:
        probs: a floating tensor ``(B, C)``.

    Returns:
        ``R`` of shape ``(B, B)``, entries in ``[-1, 1]``.

    Raises:
        ValueError: ``probs`` is not 2-D or not floating.
        NonFiniteInputError: ``probs`` holds ``NaN`` or ``Inf``.
        TypeError: ``probs`` is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import prediction_correlation
        >>> p = torch.tensor([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
        >>> prediction_correlation(p).round(decimals=3)
        tensor([[ 1.0000,  1.0000, -0.5000],
                [ 1.0000,  1.0000, -0.5000],
                [-0.5000, -0.5000,  1.0000]])
    """
    check_floating(probs, "probs")
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (B, C), got {tuple(probs.shape)}")
    check_finite(probs, "probs")
    return _correlation_matrix(probs)


def _class_indices(labels: torch.Tensor, batch: int, classes: int) -> torch.Tensor:
    """Hard class indices ``(B,)`` from hard ``(B,)`` or soft ``(B, C)`` labels."""
    if labels.dim() == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        if labels.shape[0] != batch:
            raise ValueError(
                f"labels must have shape ({batch},) or ({batch}, {classes}) to match logits, "
                f"got {tuple(labels.shape)}"
            )
        return labels
    if labels.dim() == 2 and labels.is_floating_point():
        if tuple(labels.shape) != (batch, classes):
            raise ValueError(
                f"labels must have shape ({batch},) or ({batch}, {classes}) to match logits, "
                f"got {tuple(labels.shape)}"
            )
        check_finite(labels, "labels")
        return labels.argmax(dim=1)
    raise ValueError(
        "labels must be integer class indices (B,) or floating soft labels (B, C), "
        f"got shape {tuple(labels.shape)} and dtype {labels.dtype}"
    )


def label_correlation_penalty(
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    pairs: PairSelection = "all",
    kind: CorrelationKind = "relu",
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Penalize correlated predictions within a batch (diversity in label space).

    With :math:`P = \mathrm{softmax}(z / T)` of shape ``(B, C)`` and ``R`` the ``B x B`` Pearson
    correlation matrix of its rows (see :func:`prediction_correlation`), the penalty of a pair
    ``i != j`` is :math:`\phi(R_{ij})` with, by ``kind``:

    - ``"relu"`` (default): :math:`\max(0, R_{ij})`, only similar predictions are penalized;
    - ``"raw"``: :math:`R_{ij}`; also rewards anti-correlation. Over all pairs it is bounded
      below, since :math:`\sum_{i \ne j} R_{ij} = \|\sum_i z_i\|^2 - \sum_i \|z_i\|^2
      \ge -B`;
    - ``"abs"``: :math:`|R_{ij}|`; ``"square"``: :math:`R_{ij}^2`; both push correlations
      to 0, which also penalizes two confident predictions of different classes
      (one-hot rows of distinct classes have :math:`R = -1/(C-1)`).

    ``"relu"`` is the default because it reads "small correlations" as "not alike" without
    fighting the cross-entropy term: predictions of different classes are already
    non-positively correlated and cost nothing.

    ``pairs`` selects the penalized pairs: ``"all"`` (every ``i != j``), ``"same"`` (pairs
    with the same label) or ``"different"`` (pairs with different labels). Soft labels are
    reduced to their argmax class.

    Args:
        logits: ``(B, C)`` with ``B >= 2`` and ``C >= 2``.
        labels: class indices ``(B,)`` (integer) or soft labels ``(B, C)`` (floating);
            required for ``pairs="same"`` and ``"different"``, checked but unused for
            ``"all"``.
        pairs: ``"all"``, ``"same"`` or ``"different"``.
        kind: ``"relu"``, ``"raw"``, ``"abs"`` or ``"square"``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"``: mean over the selected pairs; ``"sum"``: sum over the selected
            unordered pairs ``{i, j}`` (each pair once, so ``mean = sum / #pairs``);
            ``"none"``: per sample ``i`` the mean over its selected partners ``j``, 0 for a
            sample without one. With no selected pair at all, ``"mean"`` and ``"sum"`` give 0.

    Returns:
        A scalar, or with ``reduction="none"`` a tensor of shape ``(B,)``.

    Raises:
        ValueError: an unknown ``pairs``, ``kind`` or ``reduction``, a non-positive
            ``temperature``, ``logits`` that are not ``(B, C)`` with ``B, C >= 2`` or not
            floating, ``labels`` missing for ``"same"``/``"different"`` or of a wrong
            shape or dtype.
        NonFiniteInputError: ``logits`` or soft ``labels`` hold ``NaN`` or ``Inf``.
        TypeError: ``logits`` is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import label_correlation_penalty
        >>> alike = torch.tensor([[5.0, 0.0, 0.0]]).repeat(4, 1)
        >>> distinct = 5.0 * torch.eye(4, 3)
        >>> bool(label_correlation_penalty(alike) > label_correlation_penalty(distinct))
        True
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> label_correlation_penalty(alike, y, pairs="same", reduction="none").shape
        torch.Size([4])
    """
    check_choice(pairs, "pairs", PAIR_SELECTIONS)
    check_choice(kind, "kind", CORRELATION_KINDS)
    check_choice(reduction, "reduction", REDUCTIONS)
    t = check_temperature(temperature)
    check_floating(logits, "logits")
    if logits.dim() != 2 or logits.shape[0] < 2 or logits.shape[1] < 2:
        raise ValueError(
            "label_correlation_penalty needs logits of shape (B, C) with at least 2 samples "
            f"and 2 classes, got {tuple(logits.shape)}"
        )
    batch, classes = logits.shape
    if labels is None and pairs != "all":
        raise ValueError(f"pairs={pairs!r} needs labels, got labels=None")
    check_finite(logits, "logits")
    targets = None if labels is None else _class_indices(labels, batch, classes)

    corr = _correlation_matrix(F.softmax(logits / t, dim=1))
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=logits.device)
    if pairs == "all" or targets is None:
        mask = off_diagonal
    else:
        same = targets.to(logits.device).unsqueeze(0) == targets.to(logits.device).unsqueeze(1)
        mask = off_diagonal & (same if pairs == "same" else ~same)

    if kind == "relu":
        penalty = corr.clamp_min(0.0)
    elif kind == "raw":
        penalty = corr
    elif kind == "abs":
        penalty = corr.abs()
    else:  # "square"
        penalty = corr.square()
    selected = torch.where(mask, penalty, torch.zeros_like(penalty))
    if reduction == "none":
        counts = mask.sum(dim=1).clamp_min(1).to(penalty.dtype)
        return selected.sum(dim=1) / counts
    total = selected.sum()
    if reduction == "sum":
        return 0.5 * total
    return total / mask.sum().clamp_min(1).to(penalty.dtype)
