"""Top-1 accuracy on a labelled data set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from risloss._util import model_device

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``, in percent.

    The model is evaluated in eval mode and its ``training`` flag is restored afterwards.

    Args:
        model: a classifier returning logits ``(B, C)``.
        dataset: yields ``(image, label)`` pairs; a dataset with ``images`` and ``labels``
            tensors (such as the Fashion-MNIST loader's) is sliced directly, which is faster.
        batch_size: images per forward pass.
        device: where to run; defaults to the device of the model's first parameter.

    Returns:
        Accuracy in percent, in ``[0, 100]``.

    Raises:
        ValueError: ``batch_size < 1`` or an empty dataset.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from risloss import evaluate
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> ds = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
        >>> 0.0 <= evaluate(model, ds) <= 100.0
        True
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("dataset is empty")
    if device is None:
        device = model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        images = getattr(dataset, "images", None)
        labels = getattr(dataset, "labels", None)
        batches: Iterator[Any]
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
            batches = (
                (images[i : i + batch_size], labels[i : i + batch_size])
                for i in range(0, n, batch_size)
            )
        else:
            batches = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False))
        for x, y in batches:
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / n
