"""Synthesis figures of a batch: agreement with the requested labels, within-class similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["class_similarity", "label_agreement", "within_class_similarity"]


def label_agreement(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of a batch that ``logits`` classify as the requested (primary) label.

    Args:
        logits: ``(B, C)`` teacher logits.
        labels: hard ``(B,)`` labels, or soft ``(B, C)`` labels (their largest entry counts).

    Returns:
        A float in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from risloss.objective import label_agreement
        >>> label_agreement(torch.eye(3), torch.tensor([0, 1, 0]))
        0.6666666865348816
    """
    hard = labels.argmax(1) if labels.dtype.is_floating_point else labels
    return float((logits.detach().argmax(1) == hard).float().mean())


def class_similarity(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean pairwise cosine similarity of features of the same (primary) label, differentiable.

    Each class with at least two samples contributes the mean over its pairs; the classes are
    averaged. As a loss term it pushes the images of a class apart in the teacher's feature
    space (against within-class collapse); :func:`within_class_similarity` is the same figure
    as a detached float.

    Args:
        features: ``(B, D)`` (or ``(B, ...)``, flattened) features, e.g. the penultimate ones.
        labels: hard ``(B,)`` or soft ``(B, C)`` labels.

    Returns:
        A scalar tensor in ``[-1, 1]`` (with the graph of ``features``), or ``None`` when no
        class has two samples.

    Example:
        >>> import torch
        >>> from risloss.objective import class_similarity
        >>> f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> class_similarity(f, torch.tensor([0, 0, 1, 1]))
        tensor(0.5000, grad_fn=<MeanBackward0>)
    """
    hard = labels.argmax(1) if labels.dtype.is_floating_point else labels
    f = F.normalize(features.flatten(1).float(), dim=1)
    # One matrix product; same-class pairs picked by a mask (no loop over classes).
    same = (hard[:, None] == hard[None, :]).float()
    same.fill_diagonal_(0.0)
    counts = torch.zeros(int(hard.max()) + 1 if hard.numel() else 0, device=f.device, dtype=f.dtype)
    counts = counts.index_add(0, hard, torch.ones_like(hard, dtype=counts.dtype))
    has_pairs = counts >= 2
    if not bool(has_pairs.any()):
        return None
    per_sample = ((f @ f.T) * same).sum(1)
    per_class = torch.zeros_like(counts).index_add(0, hard, per_sample)
    n = counts[has_pairs]
    return (per_class[has_pairs] / (n * (n - 1))).mean()  # n (n - 1) ordered pairs per class


def within_class_similarity(features: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean pairwise cosine similarity of features of the same (primary) label.

    A measure of homogenization: near 1 when the images of a class all look alike to the
    teacher, lower when they differ. Each class with at least two samples contributes the mean
    over its pairs; the classes are averaged.

    Args:
        features: ``(B, D)`` (or ``(B, ...)``, flattened) features, e.g. the penultimate ones.
        labels: hard ``(B,)`` or soft ``(B, C)`` labels.

    Returns:
        A float in ``[-1, 1]``, or ``None`` when no class has two samples.

    Example:
        >>> import torch
        >>> from risloss.objective import within_class_similarity
        >>> f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> within_class_similarity(f, torch.tensor([0, 0, 1, 1]))
        0.5
    """
    value = class_similarity(features.detach(), labels)
    return None if value is None else float(value)
