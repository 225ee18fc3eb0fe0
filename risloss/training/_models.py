"""Loading teachers and building students for the trainers."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from risloss._checkpoint import load_state_dict_into
from risloss._imports import call_factory, import_factory
from risloss.models import ARCHITECTURES, list_pretrained, load_pretrained

__all__ = ["build_student", "copy_matching", "describe_object", "load_teacher"]


def describe_object(obj: Any) -> str:
    """``module.Class`` of an object, as ``metrics.json`` names what a run was given."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def load_teacher(
    model: str | nn.Module, weights: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher in eval mode with gradients off: a shipped name, ``module:factory`` (with
    ``weights``) or a model object (a copy of it: the object itself is left as it is).

    Returns:
        The model and a metadata dict (a shipped teacher's recorded facts, ``{}`` otherwise).

    Raises:
        ValueError: unknown shipped name (the message lists them), an unimportable factory,
            a missing weights file, weights that do not fit the model, or ``weights`` with a
            model object.
    """
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ValueError(
                f"weights={weights!r} applies to a model given by name ('package.module:"
                "factory'); a model object is used with the weights it holds"
            )
        return copy.deepcopy(model).eval().requires_grad_(False), {}
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a model name or a torch.nn.Module, got {type(model).__name__}"
        )
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
        teacher = call_factory(factory, model)
        if not isinstance(teacher, nn.Module):
            raise ValueError(
                f"model {model!r}: the factory returned {type(teacher).__name__}; it must "
                "return a torch.nn.Module"
            )
        if weights is None:
            raise ValueError(f"model {model!r} needs weights= (a state-dict file)")
        load_state_dict_into(teacher, weights, f"model {model!r}")
        meta = {}
    return teacher.eval().requires_grad_(False), meta


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
