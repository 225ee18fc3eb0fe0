"""Cross-entropy with soft or hard targets, the distillation loss of a student, and the
adversarial divergence a generator maximizes to find what the student has not yet learned."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adversarial_divergence", "kd_loss", "soft_cross_entropy"]


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


def adversarial_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, agreeing_only: bool = True
) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` per sample, averaged over the batch.

    The term a generator *maximizes* in adversarial data-free distillation: images on which the
    student still disagrees with the teacher. With ``agreeing_only`` (the default) only the
    samples whose top-1 class is the same for both count (the others add zero): pushing the
    divergence further on images the two already classify differently drives the generator
    toward images that match no class of the teacher.

    Both inputs may carry gradients (to reach the images); neither is modified.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        agreeing_only: count only the samples with the same top-1 class.

    Returns:
        A non-negative scalar (the mean over all ``B`` samples).

    Raises:
        ValueError: shapes that are not the same ``(B, C)``.

    Example:
        >>> import torch
        >>> from risloss.functional import adversarial_divergence
        >>> t = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
        >>> adversarial_divergence(t, t).item()
        0.0
        >>> s = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # agrees on the first sample only
        >>> round(adversarial_divergence(s, t).item(), 4)
        0.0849
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both be (B, C) of the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    per_sample = F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(teacher_logits, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1)
    if agreeing_only:
        same = student_logits.detach().argmax(1) == teacher_logits.detach().argmax(1)
        per_sample = per_sample * same.to(per_sample.dtype)
    return per_sample.mean()
