"""Loading teachers and building students for the trainers."""

from __future__ import annotations

import copy
import importlib
import os
import sys
from typing import Any

from torch import nn

from risloss._checkpoint import load_state_dict_into
from risloss.models import list_pretrained, load_pretrained, resnet8, resnet20

__all__ = ["build_student", "load_teacher"]

_STUDENTS = {"resnet8": resnet8, "resnet20": resnet20}


def _import_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    # Like `python -m`, let a factory module in the working folder be found.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not module_name or not attr:
        raise ValueError(f"model must be a shipped name or 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    return obj


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
        factory = _import_factory(model)
        teacher = factory()
        if not isinstance(teacher, nn.Module):
            raise ValueError(f"model {model!r}: the factory returned {type(teacher).__name__}")
        if weights is None:
            raise ValueError(f"model {model!r} needs weights= (a state-dict file)")
        load_state_dict_into(teacher, weights, f"model {model!r}")
        meta = {}
    return teacher.eval().requires_grad_(False), meta


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
