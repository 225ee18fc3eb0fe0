"""Loading teachers and building students for the trainers."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from risloss._checkpoint import load_state_dict_into
from risloss._imports import import_factory
from risloss.models import list_pretrained, load_pretrained, resnet8, resnet20

__all__ = ["build_student", "data_options", "load_teacher"]

_STUDENTS = {"resnet8": resnet8, "resnet20": resnet20}


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
) -> nn.Module:
    """The model a run trains: a copy of the teacher (quantize, prune) or a fresh student.

    Quantization comes before pruning: quantized layers subclass ``nn.Conv2d``/``nn.Linear``
    and recompute their weight ranges at every call, so pruning masks and removed channels
    carry over, while a layer reparametrized by :mod:`torch.nn.utils.prune` cannot be wrapped.
    """
    net: nn.Module
    if task == "distill":
        net = _STUDENTS[student](
            num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )
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
