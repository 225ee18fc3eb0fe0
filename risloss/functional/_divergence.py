"""Prediction-level inconsistency: a divergence between two softmax distributions."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from risloss.functional._checks import check_choice, check_pair, check_temperature
from risloss.functional._reduction import REDUCTIONS, Reduction, reduce

__all__ = ["DIVERGENCE_KINDS", "DivergenceKind", "prediction_divergence"]

DivergenceKind = Literal["l1", "kl", "skl", "js"]
"""Divergences between predicted distributions accepted by :func:`prediction_divergence`."""

DIVERGENCE_KINDS: tuple[str, ...] = get_args(DivergenceKind)
"""The accepted values of ``kind`` (the members of :data:`DivergenceKind`)."""

_LOG2 = math.log(2.0)


def prediction_divergence(
    p_logits: torch.Tensor,
    q_logits: torch.Tensor,
    *,
    kind: DivergenceKind = "l1",
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Divergence between the softmax distributions of two sets of logits.

    With :math:`p = \mathrm{softmax}(z_p / T)` and :math:`q = \mathrm{softmax}(z_q / T)` over the
    last dimension (``C`` classes), per sample:

    - ``"l1"``: :math:`\sum_c |p_c - q_c|`, in :math:`[0, 2]` (the paper's choice);
    - ``"kl"``: :math:`\mathrm{KL}(p \| q) = \sum_c p_c (\log p_c - \log q_c)`;
    - ``"skl"``: :math:`\mathrm{KL}(p \| q) + \mathrm{KL}(q \| p) = \sum_c (p_c - q_c)
      (\log p_c - \log q_c)`;
    - ``"js"``: :math:`\tfrac12 \mathrm{KL}(p \| m) + \tfrac12 \mathrm{KL}(q \| m)` with
      :math:`m = (p + q) / 2`, in :math:`[0, \log 2]`.

    Log-probabilities come from ``log_softmax`` and :math:`\log m` from ``logaddexp``, so
    confident (near one-hot) predictions stay finite. ``"kl"`` and ``"js"`` are clamped at 0 to
    remove rounding error on (nearly) identical inputs. ``"l1"``, ``"skl"`` and ``"js"`` are
    symmetric in their arguments; ``"kl"`` is not.

    Args:
        p_logits: logits ``(..., C)``; the first distribution.
        q_logits: logits of the same shape; the second distribution.
        kind: ``"l1"``, ``"kl"``, ``"skl"`` or ``"js"``.
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` or ``"sum"`` over all leading positions, or ``"none"``.

    Returns:
        A scalar, or with ``reduction="none"`` a tensor of shape ``p_logits.shape[:-1]``.

    Raises:
        ValueError: an unknown ``kind`` or ``reduction``, a non-positive ``temperature``,
            inputs of different shapes, a 0-d or empty input, or a non-floating dtype.
        NonFiniteInputError: an input holds ``NaN`` or ``Inf``.
        TypeError: an input is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import prediction_divergence
        >>> p = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> prediction_divergence(p, p).item()
        0.0
        >>> prediction_divergence(p, p.flip(0), reduction="none").shape
        torch.Size([2])
        >>> bool(prediction_divergence(p, p.flip(0), kind="js") <= torch.log(torch.tensor(2.0)))
        True
    """
    check_choice(kind, "kind", DIVERGENCE_KINDS)
    check_choice(reduction, "reduction", REDUCTIONS)
    t = check_temperature(temperature)
    check_pair(
        p_logits, q_logits, ("p_logits", "q_logits"), min_dim=1, shape="a class dimension (..., C)"
    )

    log_p = F.log_softmax(p_logits / t, dim=-1)
    log_q = F.log_softmax(q_logits / t, dim=-1)
    if kind == "l1":
        values = (log_p.exp() - log_q.exp()).abs().sum(dim=-1)
    elif kind == "kl":
        values = (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0.0)
    elif kind == "skl":
        # Each term (p - q)(log p - log q) is >= 0, so no clamp is needed.
        values = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)
    else:  # "js"
        log_m = torch.logaddexp(log_p, log_q) - _LOG2
        kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
        kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
        values = (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)
    return reduce(values, reduction)
