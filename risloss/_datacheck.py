"""Checks of an evaluation set before training: labels, image sizes, readable images.

A run evaluates its student at the end of its training; a label out of range is then scored
silently as a wrong answer, and an unreadable image or one of another size fails only there,
after all the work. :func:`check_dataset` looks before any training, as cheaply as the data
allows:

- every label at once when the data set holds them as a tensor or list (a ``TensorDataset``,
  ``labels``/``targets`` attributes, through ``Subset`` and the resizing wrapper of
  :func:`risloss.data.load_dataset`): whole numbers in ``0..num_classes-1``;
- for an image folder (torchvision's ``ImageFolder``), the header of every image file (the
  file opens and tells its size) and, when the files differ in size, one item of each size
  through the data set's transform (the sizes it yields must agree);
- for images held as one tensor, that every value is finite;
- a sample of items (evenly spread, the first and last included): ``(image, label)`` pairs,
  ``(C, H, W)`` float images of one size with finite values, and labels as above.

The answer is one line naming the first bad item (and its file), or ``None``.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from risloss._datacheck import check_dataset
    >>> good = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> check_dataset(good, num_classes=3) is None
    True
    >>> bad = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 50, 2]))
    >>> check_dataset(bad, num_classes=3)  # doctest: +ELLIPSIS
    'the evaluation data: item 4 has label 50, outside 0..2 (the model has 3 outputs); ...'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Subset, TensorDataset

__all__ = ["check_dataset", "sample_indices"]

_RESIZE = "resize them with --image-size N (image_size=)"


def sample_indices(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``, the first and the last included.

    Example:
        >>> from risloss._datacheck import sample_indices
        >>> sample_indices(10, 4), sample_indices(3, 8), sample_indices(1, 5)
        ([0, 3, 6, 9], [0, 1, 2], [0])
    """
    if n <= 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _passes_labels(dataset: Any) -> bool:
    """Whether ``dataset`` wraps ``dataset.dataset`` keeping its labels: the wrapper of
    :func:`risloss.data.load_dataset` that resizes and normalizes a data set from code (named,
    not imported: the data module may use this one). Another wrapper may change the labels,
    so only its items are read."""
    kind = type(dataset)
    return kind.__module__ == "risloss.data" and kind.__name__ == "_Transformed"


def _unwrap(dataset: Any) -> tuple[Any, list[int] | None]:
    """The innermost data set and, when ``Subset``s select from it, the indices into it of
    the outer items (``None``: the same indices)."""
    index: list[int] | None = None
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(dataset, Subset):
            inner = [int(i) for i in dataset.indices]
            index = inner if index is None else [inner[i] for i in index]
            dataset = dataset.dataset
        elif _passes_labels(dataset):
            dataset = dataset.dataset
        else:
            break
    return dataset, index


def _label_values(base: Any) -> Any:
    """Every label of ``base`` as a tensor or a list, when it holds them; else ``None``."""
    if isinstance(base, TensorDataset) and len(base.tensors) == 2:
        labels = base.tensors[1]
        return labels if labels.ndim == 1 else None
    for attr in ("labels", "targets"):
        values = getattr(base, attr, None)
        if isinstance(values, torch.Tensor) and values.ndim == 1:
            return values
        if isinstance(values, list | tuple) and len(values) == len(base):
            return list(values)
    return None


def _label_problem(value: Any, num_classes: int) -> str | None:
    """What is wrong with one label (``None``: a class index in range)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return f"a label of shape {tuple(value.shape)}, not a class index"
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"label {value!r} ({type(value).__name__}), not a class index"
    if not isinstance(value, numbers.Integral):
        as_float = float(value)
        if not math.isfinite(as_float) or as_float != int(as_float):
            return f"label {as_float:.6g}, not a whole number (labels are class indices)"
        value = int(as_float)
    if not 0 <= int(value) < num_classes:
        return (
            f"label {int(value)}, outside 0..{num_classes - 1} (the model has {num_classes} "
            f"outputs); use a model with more classes, or data whose labels fit"
        )
    return None


def _labels_at_once(labels: Any, index: list[int] | None, num_classes: int) -> str | None:
    """The first bad label among all of them, as ``"item I has ..."``."""
    if isinstance(labels, torch.Tensor):
        values = labels if index is None else labels[torch.as_tensor(index, dtype=torch.long)]
        if values.dtype == torch.bool or values.is_complex():
            return f"item 0 has labels of type {values.dtype}, not class indices"
        if values.is_floating_point():
            bad = ~torch.isfinite(values) | (values != values.round())
            bad |= (values < 0) | (values >= num_classes)
        else:
            bad = (values < 0) | (values >= num_classes)
        if not bool(bad.any()):
            return None
        first = int(bad.nonzero()[0, 0])
        return f"item {first} has {_label_problem(values[first], num_classes)}"
    for position, i in enumerate(range(len(labels)) if index is None else index):
        problem = _label_problem(labels[i], num_classes)
        if problem is not None:
            return f"item {position} has {problem}"
    return None


def _image_folder_problem(
    dataset: Any, base: Any, index: list[int] | None, what: str
) -> str | None:
    """Decode every selected file's header; items of each distinct size must agree."""
    from PIL import Image

    samples: Sequence[Any] = base.samples
    chosen = range(len(samples)) if index is None else index
    first_of_size: dict[tuple[int, int], int] = {}
    for position, i in enumerate(chosen):
        path = samples[i][0]
        try:
            with Image.open(path) as image:
                size = tuple(image.size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return f"{what}: image {path} (item {position}) cannot be read ({reason})"
        first_of_size.setdefault((int(size[0]), int(size[1])), position)
    if len(first_of_size) > 1:  # files of several sizes: do they come out of one size?
        shapes: dict[tuple[int, ...], int] = {}
        for position in list(first_of_size.values())[:8]:
            item = _item(dataset, position, what)
            if isinstance(item, str):
                return item
            image = item[0]
            if isinstance(image, torch.Tensor):
                shapes.setdefault(tuple(image.shape), position)
            if len(shapes) > 1:
                (a, i), (b, j) = list(shapes.items())[:2]
                return (
                    f"{what}: images differ in size: item {i} ({samples[_at(index, i)][0]}) "
                    f"is {a}, item {j} ({samples[_at(index, j)][0]}) is {b}; give them one "
                    f"size, or {_RESIZE}"
                )
    return None


def _at(index: list[int] | None, position: int) -> int:
    return position if index is None else index[position]


def _item(dataset: Any, i: int, what: str) -> tuple[Any, Any] | str:
    """Item ``i`` as an ``(image, label)`` pair, or the problem."""
    try:
        item = dataset[i]
    except Exception as exc:  # the user's data set may raise anything
        reason = " ".join(str(exc).split())
        return f"{what}: item {i} cannot be read ({type(exc).__name__}: {reason})"
    if not (isinstance(item, tuple | list) and len(item) == 2):
        return f"{what}: item {i} is a {type(item).__name__}, not an (image, label) pair"
    return item[0], item[1]


def _tensor_images(base: Any) -> torch.Tensor | None:
    images: Any
    if isinstance(base, TensorDataset) and len(base.tensors) == 2:
        images = base.tensors[0]
    else:
        images = getattr(base, "images", None)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point():
        return images
    return None


def check_dataset(
    dataset: Any, num_classes: int, *, sample: int = 64, what: str = "the evaluation data"
) -> str | None:
    """The first problem of an evaluation set, in one line; ``None`` when none is found.

    See the module for what is checked and how. Nothing is changed; the items read are the
    sample's (and, for an image folder whose files differ in size, one per size).

    Args:
        dataset: a data set of ``(image, label)`` pairs (``__len__``, ``__getitem__``).
        num_classes: the model's outputs: labels must lie in ``0..num_classes-1``.
        sample: how many items to read (spread evenly, at least the first and last).
        what: names the data set in the message.

    Returns:
        ``"<what>: <the first problem, naming the item>"``, or ``None``.

    Raises:
        ValueError: ``num_classes`` or ``sample`` not an integer >= 1.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from risloss._datacheck import check_dataset
        >>> soft = TensorDataset(torch.rand(4, 1, 8, 8), torch.tensor([0.0, 1.0, 3.7, 1.0]))
        >>> print(check_dataset(soft, num_classes=10))
        the evaluation data: item 2 has label 3.7, not a whole number (labels are class indices)
    """
    for name, value in (("num_classes", num_classes), ("sample", sample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        n = len(dataset)
    except Exception as exc:
        return f"{what}: cannot tell how many items it holds ({type(exc).__name__}: {exc})"
    if n == 0:
        return f"{what}: it holds no (image, label) pairs"
    base, index = _unwrap(dataset)
    labels = _label_values(base)
    if labels is not None:
        try:
            problem = _labels_at_once(labels, index, num_classes)
        except (IndexError, TypeError, ValueError, RuntimeError):
            problem = None  # labels that do not line up with the items: the sample decides
        if problem is not None:
            return f"{what}: {problem}"
    if isinstance(getattr(base, "samples", None), list) and hasattr(base, "loader"):
        problem = _image_folder_problem(dataset, base, index, what)
        if problem is not None:
            return problem
    images = _tensor_images(base)
    if images is not None:
        chosen = images if index is None else images[torch.as_tensor(index, dtype=torch.long)]
        finite = torch.isfinite(chosen.flatten(1)).all(1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            return f"{what}: the image of item {first} holds NaN or infinite values"
    first_shape: tuple[int, ...] | None = None
    first_at = 0
    for i in sample_indices(n, sample):
        item = _item(dataset, i, what)
        if isinstance(item, str):
            return item
        image, label = item
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
            got = (
                f"a {image.dtype} tensor of shape {tuple(image.shape)}"
                if isinstance(image, torch.Tensor)
                else f"a {type(image).__name__}"
            )
            return f"{what}: the image of item {i} is {got}, not a (C, H, W) float tensor"
        shape = tuple(int(v) for v in image.shape)
        if first_shape is None:
            first_shape, first_at = shape, i
        elif shape != first_shape:
            return (
                f"{what}: images differ in size: item {first_at} is {first_shape}, item {i} "
                f"is {shape}; give them one size, or {_RESIZE}"
            )
        if not bool(torch.isfinite(image).all()):
            return f"{what}: the image of item {i} holds NaN or infinite values"
        problem = _label_problem(label, num_classes)
        if problem is not None:
            return f"{what}: item {i} has {problem}"
    return None
