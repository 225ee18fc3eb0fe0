"""Switching a quantized model between calibration, frozen and full-precision modes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from risloss.quant._fake_quant import ActivationFakeQuant, WeightFakeQuant

__all__ = [
    "calibration",
    "disable_fake_quant",
    "disable_observer",
    "enable_fake_quant",
    "enable_observer",
    "freeze",
]


def enable_observer(module: nn.Module) -> None:
    """Let ``module`` update its range if it is an :class:`ActivationFakeQuant`; else no-op.

    Meant for ``model.apply(enable_observer)``.

    Args:
        module: any module; only quantizers are affected.

    Example:
        >>> from torch import nn
        >>> from risloss.quant import quantize_model, activation_quantizers
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
        >>> _ = student.apply(enable_observer)
        >>> [bool(q.observer_enabled) for q in activation_quantizers(student).values()]
        [True]
    """
    if isinstance(module, ActivationFakeQuant):
        module.enable_observer()


def disable_observer(module: nn.Module) -> None:
    """Freeze ``module``'s range if it is an :class:`ActivationFakeQuant`; else no-op.

    Meant for ``model.apply(disable_observer)`` (the same as :func:`freeze`).

    Args:
        module: any module; only quantizers are affected.

    Example:
        >>> from risloss.quant import ActivationFakeQuant
        >>> quantizer = ActivationFakeQuant().enable_observer()
        >>> disable_observer(quantizer)
        >>> bool(quantizer.observer_enabled)
        False
    """
    if isinstance(module, ActivationFakeQuant):
        module.disable_observer()


def enable_fake_quant(module: nn.Module) -> None:
    """Turn quantization on in ``module`` if it is a weight or activation quantizer; else no-op.

    Meant for ``model.apply(enable_fake_quant)``.

    Args:
        module: any module; only quantizers are affected.

    Example:
        >>> from risloss.quant import WeightFakeQuant
        >>> quantizer = WeightFakeQuant().disable_fake_quant()
        >>> enable_fake_quant(quantizer)
        >>> bool(quantizer.fake_quant_enabled)
        True
    """
    if isinstance(module, (ActivationFakeQuant, WeightFakeQuant)):
        module.enable_fake_quant()


def disable_fake_quant(module: nn.Module) -> None:
    """Let tensors pass through ``module`` unchanged if it is a quantizer; else no-op.

    ``model.apply(disable_fake_quant)`` makes a quantized model compute in full precision
    (observers keep observing if enabled).

    Args:
        module: any module; only quantizers are affected.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.quant import quantize_model
        >>> model = nn.Sequential(nn.Linear(4, 4))
        >>> student = quantize_model(model).apply(disable_fake_quant)
        >>> x = torch.randn(2, 4)
        >>> torch.equal(student(x), model(x))
        True
    """
    if isinstance(module, (ActivationFakeQuant, WeightFakeQuant)):
        module.disable_fake_quant()


def _quantizers(model: nn.Module) -> tuple[list[ActivationFakeQuant], list[WeightFakeQuant]]:
    activations = [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]
    weights = [m for m in model.modules() if isinstance(m, WeightFakeQuant)]
    if not activations and not weights:
        raise ValueError(
            f"model has no fake quantizers ({type(model).__name__}); build the student with "
            "risloss.quant.quantize_model first"
        )
    return activations, weights


@contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Observe activation ranges inside the ``with`` block; restore every flag on exit.

    On entry every :class:`ActivationFakeQuant` of ``model`` gets ``observer_enabled = 1``, so
    each forward in the block updates the EMA ranges (the first observation initializes them).
    Quantization flags are left as they are: with quantization on, each layer observes the
    quantized output of the layers before it, as at deployment. On exit - normal or through an
    exception - the ``observer_enabled`` and ``fake_quant_enabled`` flags of every weight and
    activation quantizer are restored to their values at entry (for a freshly quantized model:
    observers off, i.e. the calibrated ranges are frozen). The observed ranges are kept.

    Run the forwards in the block yourself, usually in eval mode under ``torch.no_grad()``.
    Train/eval mode does not matter to the observers.

    Args:
        model: a model built by :func:`quantize_model`.

    Yields:
        ``model``.

    Raises:
        ValueError: ``model`` has no fake quantizers.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.quant import activation_quantizers, quantize_model
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU())).eval()
        >>> with torch.no_grad(), calibration(student):
        ...     _ = student(torch.randn(16, 4))
        >>> quantizer = activation_quantizers(student)["1.activation_fake_quant"]
        >>> quantizer.is_calibrated, bool(quantizer.observer_enabled)
        (True, False)
    """
    activations, weights = _quantizers(model)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    for quantizer in activations:
        saved.append((quantizer.observer_enabled, quantizer.observer_enabled.clone()))
        saved.append((quantizer.fake_quant_enabled, quantizer.fake_quant_enabled.clone()))
    for weight_quantizer in weights:
        saved.append(
            (weight_quantizer.fake_quant_enabled, weight_quantizer.fake_quant_enabled.clone())
        )
    try:
        for quantizer in activations:
            quantizer.enable_observer()
        yield model
    finally:
        with torch.no_grad():
            for flag, value in saved:
                flag.copy_(value)


def freeze(model: nn.Module) -> nn.Module:
    """Stop every activation observer of ``model``: the ranges stay fixed from now on.

    Equivalent to ``model.apply(disable_observer)``. Quantizers that never observed anything
    keep passing their input through; check ``is_calibrated`` on
    :func:`activation_quantizers`' values.

    Args:
        model: a model built by :func:`quantize_model`.

    Returns:
        ``model`` (modified in place).

    Raises:
        ValueError: ``model`` has no fake quantizers.

    Example:
        >>> from torch import nn
        >>> from risloss.quant import activation_quantizers, enable_observer, quantize_model
        >>> student = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
        >>> _ = student.apply(enable_observer)
        >>> _ = freeze(student)
        >>> [bool(q.observer_enabled) for q in activation_quantizers(student).values()]
        [False]
    """
    activations, _ = _quantizers(model)
    for quantizer in activations:
        quantizer.disable_observer()
    return model
