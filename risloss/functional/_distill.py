"""Cross-entropy with soft or hard targets and the distillation loss of a student."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "soft_cross_entropy"]


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard ``(B,)`` or soft ``(B, C)`` targets, averaged over the batch.

    For soft targets ``q``: ``-mean_i sum_c q_ic log softmax(logits)_ic``; for hard targets it
    is :func:`torch.nn.functional.cross_entropy`.

    Args:
        logits: ``(B, C)``.
        labels: integer class indices ``(B,)`` or float class weights ``(B, C)``.

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> from risloss.functional import soft_cross_entropy
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> hard = soft_cross_entropy(z, torch.tensor([0, 1]))
        >>> soft = soft_cross_entropy(z, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> torch.allclose(hard, soft)
        True
    """
    if labels.dtype.is_floating_point:
        return -(labels * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, labels)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The distillation term of the student's loss; the ``T^2`` factor keeps the gradient scale
    independent of the temperature.

    Args:
        student_logits: ``(B, C)``, carries the gradient.
        teacher_logits: ``(B, C)``, the target (pass it detached).
        t: the temperature ``T > 0``.

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> from risloss.functional import kd_loss
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> kd_loss(z, z, 4.0).item()
        0.0
        >>> bool(kd_loss(z, z.flip(1), 4.0) > 0)
        True
    """
    return (t * t) * F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
