"""Loading teachers and building students for the trainers."""

from __future__ import annotations

import copy
from typing import Any, Literal

from torch import nn

from risloss._checkpoint import load_state_dict_into
from risloss._imports import import_factory
from risloss.data import _channel_stats, _default_normalization
from risloss.models import ARCHITECTURES, list_pretrained, load_pretrained

__all__ = ["build_student", "data_options", "input_range_of", "load_teacher", "model_normalization"]


def load_teacher(model: str, weights: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a teacher in eval mode with gradients off: a shipped name or ``module:factory``.

    Returns:
        The model and a metadata dict (``{}`` for a user model).

    Raises:
        ValueError: unknown shipped name (the message lists them), an unimportable factory,
            a missing weights file, or weights that do not fit the model.
    """
    shipped = list_pretrained()
    if ":" not in model:
        if model not in shipped:
            raise ValueError(
                f"model must be one of the shipped teachers {sorted(shipped)} or "
                f"'package.module:factory', got {model!r}"
            )
        teacher = load_pretrained(model)
        meta = dict(shipped[model])
    else:
        factory = import_factory(model)
        teacher = factory()
        if not isinstance(teacher, nn.Module):
            raise ValueError(f"model {model!r}: the factory returned {type(teacher).__name__}")
        if weights is None:
            raise ValueError(f"model {model!r} needs weights= (a state-dict file)")
        load_state_dict_into(teacher, weights, f"model {model!r}")
        meta = {}
    return teacher.eval().requires_grad_(False), meta


def data_options(
    data: str, image_size: Any, normalize: Any, meta: dict[str, Any]
) -> tuple[Any, Any]:
    """The ``image_size`` and ``normalize`` to load ``data`` with, for a teacher.

    Where an option says ``"default"`` and the teacher is a shipped one (``meta`` holds its
    recorded ``input_shape`` and ``preprocessing``), the teacher's own input size and
    normalization are used for data read from image files; a data set built by code
    (``package.module:factory``) is left as its factory returns it.
    """
    from_code = ":" in data and not data.startswith("imagefolder:")
    if from_code:
        return image_size, normalize
    shape = meta.get("input_shape")
    if image_size == "default" and shape is not None and shape[1] == shape[2]:
        image_size = int(shape[1])
    prep = meta.get("preprocessing") or {}
    if normalize == "default" and "mean" in prep and "std" in prep:
        normalize = (tuple(prep["mean"]), tuple(prep["std"]))
    return image_size, normalize


def model_normalization(
    data: str, normalize: Any, meta: dict[str, Any]
) -> tuple[tuple[float, ...], tuple[float, ...]] | Literal["unknown"] | None:
    """How the model's inputs relate to pixels in ``[0, 1]``: the ``(mean, std)`` they are
    normalized with, ``None`` (the model takes the pixels as they are) or ``"unknown"`` (a data
    set built by code, whose preprocessing only its factory knows).

    ``normalize`` as :class:`~risloss.training.TrainConfig` holds it; ``"default"`` resolves to
    a shipped teacher's recorded normalization, else to the data set's default.
    """
    norm: Any = normalize
    if norm == "default":
        prep = meta.get("preprocessing") or {}
        if "mean" in prep and "std" in prep:
            return tuple(prep["mean"]), tuple(prep["std"])
        norm = _default_normalization(data)
        if norm is None:
            return "unknown"
    return None if norm is None else (tuple(norm[0]), tuple(norm[1]))


def input_range_of(
    value: Any, data: str, normalize: Any, meta: dict[str, Any], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-channel ``(low, high)`` a :class:`~risloss.training.TrainConfig`'s
    ``input_range`` asks the generator's images to stay in (``None``: unbounded).

    ``"auto"`` is the image of pixels in ``[0, 1]`` under the model's normalization
    (:func:`model_normalization`); ``None`` where that normalization is unknown.
    """
    if value == "none":
        return None
    if value == "auto":
        norm = model_normalization(data, normalize, meta)
        if norm == "unknown":
            return None
        if norm is None:
            return (0.0,) * channels, (1.0,) * channels
        mean, std = _channel_stats(norm[0], norm[1], channels, "normalize")
        return (
            tuple((0.0 - m) / s for m, s in zip(mean, std, strict=True)),
            tuple((1.0 - m) / s for m, s in zip(mean, std, strict=True)),
        )
    low, high = value
    if len(low) not in (1, channels):
        raise ValueError(
            f"input_range must have 1 or {channels} values per bound (one per image channel), "
            f"got {len(low)}"
        )
    return (tuple(low) * channels, tuple(high) * channels) if len(low) == 1 else (low, high)


def copy_matching(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy into ``target`` every parameter and buffer of ``source`` with the same name and shape.

    Returns:
        The names copied.

    Raises:
        ValueError: no name and shape in common (nothing to start from).

    Example:
        >>> from risloss.models import resnet8, resnet20
        >>> from risloss.training._models import copy_matching
        >>> teacher, student = resnet20(num_classes=10), resnet8(num_classes=10)
        >>> copied = copy_matching(teacher, student)
        >>> len(copied) == len(student.state_dict())  # ResNet-8's tensors all exist in ResNet-20
        True
    """
    theirs = source.state_dict()
    ours = target.state_dict()
    names = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    if not names:
        raise ValueError(
            "student_init='teacher': the student shares no parameter or buffer (same name and "
            "shape) with the teacher; use student_init='random'"
        )
    target.load_state_dict({k: theirs[k] for k in names}, strict=False)
    return names


def build_student(
    teacher: nn.Module,
    *,
    task: str,
    student: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    sparsity: float,
    structured: bool,
    w_bits: int | None,
    a_bits: int | None,
    first_last_bits: int | None,
    student_init: str = "random",
) -> nn.Module:
    """The model a run trains: a copy of the teacher (quantize, prune) or a fresh student
    (``student_init="teacher"``: started from the teacher's matching tensors).

    Quantization comes before pruning: quantized layers subclass ``nn.Conv2d``/``nn.Linear``
    and recompute their weight ranges at every call, so pruning masks and removed channels
    carry over, while a layer reparametrized by :mod:`torch.nn.utils.prune` cannot be wrapped.
    """
    net: nn.Module
    if task == "distill":
        net = ARCHITECTURES[student](
            num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )
        if student_init == "teacher":
            copy_matching(teacher, net)
    else:
        net = copy.deepcopy(teacher)
    if w_bits is not None and a_bits is not None:
        from risloss.quant import quantize_model

        net = quantize_model(
            net, w_bits=w_bits, a_bits=a_bits, first_last_bits=first_last_bits, inplace=True
        )
    if task == "prune":
        from risloss.pruning import prune_model

        net = prune_model(net, sparsity=sparsity, structured=structured, inplace=True)
    net.requires_grad_(True)
    return net
