"""Argument checks shared by the functional losses and their module twins."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from risloss._validators import check, one_of, positive

__all__ = [
    "NonFiniteInputError",
    "check_choice",
    "check_finite",
    "check_floating",
    "check_nonempty",
    "check_pair",
    "check_same_shape",
    "check_temperature",
]


class NonFiniteInputError(ValueError):
    """An input tensor holds ``NaN`` or ``Inf`` values.

    A subclass of :class:`ValueError`, so ``except ValueError`` catches it too.

    Example:
        >>> import torch
        >>> from risloss.functional import NonFiniteInputError, prediction_divergence
        >>> bad = torch.tensor([[0.0, float("nan")]])
        >>> try:
        ...     prediction_divergence(bad, bad)
        ... except NonFiniteInputError as err:
        ...     print(err)
        p_logits contains NaN or Inf values
    """


def check_choice(value: object, name: str, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``name`` and the allowed values unless ``value`` is one of
    them (the rule :class:`~risloss._validators.one_of`).

    Raises:
        ValueError: ``value`` is not in ``allowed``.
    """
    check(one_of(tuple(allowed)), name, value)


def check_temperature(value: object, name: str = "temperature") -> float:
    """Return ``value`` as a float after checking it is a positive, finite real number (the
    rule :data:`~risloss._validators.positive`).

    Raises:
        ValueError: ``value`` is not a real number, or is not in ``(0, inf)``.
    """
    return float(check(positive, name, value))  # type: ignore[arg-type]


def _never_wrapped(x: torch.Tensor) -> bool:
    return False


# True for a tensor seen inside a torch.func transform (vmap, grad, ...). Under vmap a
# data-dependent check cannot run at all, so the check is skipped inside transforms.
_is_transformed = getattr(
    getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", _never_wrapped
)


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise :class:`NonFiniteInputError` if ``x`` holds ``NaN`` or ``Inf``.

    One ``torch.isfinite(x).all()`` reduction (a host synchronization on accelerators);
    integer and boolean tensors always pass. Inside a ``torch.func`` transform such as
    ``torch.vmap`` the value of ``x`` cannot steer control flow, so the check is skipped.

    Raises:
        NonFiniteInputError: ``x`` is a floating-point tensor with a non-finite entry.
    """
    if not (x.is_floating_point() or x.is_complex()) or _is_transformed(x):
        return
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError(f"{name} contains NaN or Inf values")


def check_floating(x: object, name: str) -> None:
    """Raise unless ``x`` is a floating-point tensor.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: the dtype of ``x`` is not floating point.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_nonempty(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has no elements.

    Raises:
        ValueError: ``x.numel() == 0``.
    """
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` quoting both shapes unless ``a`` and ``b`` have the same shape.

    Raises:
        ValueError: ``a.shape != b.shape``.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_pair(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], *, min_dim: int, shape: str
) -> None:
    """The checks of a loss of two tensors of one shape, in order: both floating point, the
    same shape, at least ``min_dim`` dimensions (else ``"<a> and <b> must have <shape>, got
    <a's shape>"``), not empty, both finite.

    Raises:
        ValueError: the first check that fails (:class:`NonFiniteInputError` for ``NaN`` or
            ``Inf``), naming the argument.
    """
    check_floating(a, names[0])
    check_floating(b, names[1])
    check_same_shape(a, b, *names)
    if a.dim() < min_dim:
        got = "0-d" if a.dim() == 0 else str(tuple(a.shape))
        raise ValueError(f"{names[0]} and {names[1]} must have {shape}, got {got}")
    check_nonempty(a, names[0])
    check_finite(a, names[0])
    check_finite(b, names[1])
