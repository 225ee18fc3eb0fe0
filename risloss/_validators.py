"""attrs validators shared by the configuration classes; each error names the field.

Every message reads ``"<field> must be <allowed>, got <value>"``; the range validators also
carry the rule as text in ``allowed``, so the command line can print it in ``--help``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "bits",
    "boolean",
    "choices_of",
    "device_name",
    "int_at_least",
    "int_in",
    "non_negative",
    "number_in",
    "one_of",
    "optional_bits",
    "positive",
    "teacher_name",
]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class one_of:
    """The value must be one of ``allowed`` (kept as ``.allowed`` for command-line choices)."""

    allowed: tuple[Any, ...]

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in self.allowed:
            raise ValueError(f"{attribute.name} must be one of {self.allowed}, got {value!r}")


def choices_of(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of every field of an attrs class validated by :class:`one_of`."""
    return {
        f.name: f.validator.allowed for f in attrs.fields(cls) if isinstance(f.validator, one_of)
    }


@attrs.frozen
class int_in:
    """An ``int`` (not a ``bool``) in ``low..high`` (``high=None``: no upper bound).

    Example:
        >>> from risloss._validators import int_in
        >>> int_in(1, 64).allowed
        'an integer in 1..64'
    """

    low: int
    high: int | None = None

    @property
    def allowed(self) -> str:
        if self.high is None:
            return f"an integer >= {self.low}"
        return f"an integer in {self.low}..{self.high}"

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < self.low
            or (self.high is not None and value > self.high)
        ):
            raise ValueError(f"{attribute.name} must be {self.allowed}, got {value!r}")


def int_at_least(low: int) -> int_in:
    """The value must be an ``int`` (not a ``bool``) ``>= low``."""
    return int_in(low)


def _bound(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


@attrs.frozen
class number_in:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``open_low``); NaN rejected.

    Example:
        >>> from risloss._validators import number_in
        >>> number_in(0.0, 1000.0).allowed
        'a finite number in [0, 1000]'
        >>> number_in(0.0, 10.0, open_low=True).allowed
        'a finite number in (0, 10]'
    """

    low: float
    high: float = math.inf
    open_low: bool = False

    @property
    def allowed(self) -> str:
        if math.isinf(self.high):  # the wording of the unbounded validators below
            sign = ">" if self.open_low else ">="
            bracket = "(" if self.open_low else "["
            return (
                f"a finite number {sign} {_bound(self.low)} "
                f"(allowed range {bracket}{_bound(self.low)}, inf))"
            )
        bracket = "(" if self.open_low else "["
        return f"a finite number in {bracket}{_bound(self.low)}, {_bound(self.high)}]"

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = (
            _is_number(value)
            and math.isfinite(value)
            and (value > self.low if self.open_low else value >= self.low)
            and value <= self.high
        )
        if not ok:
            raise ValueError(f"{attribute.name} must be {self.allowed}, got {value!r}")


non_negative = number_in(0.0)
"""A finite number ``>= 0`` (NaN and infinity rejected)."""

positive = number_in(0.0, open_low=True)
"""A finite number ``> 0``."""


bits = int_in(2, 16)
"""An integer bit width in 2..16."""


def optional_bits(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``None`` or an integer bit width in 2..16."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        raise ValueError(f"{attribute.name} must be an integer in 2..16 or None, got {value!r}")


def boolean(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``True`` or ``False`` only (not 0/1)."""
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, got {value!r}")


DEVICES = "'cpu', 'cuda', 'cuda:N' or 'mps'"


def device_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A name :class:`torch.device` accepts, of type CPU, CUDA or MPS (``"cuda:abc"`` fails).

    Whether the device exists on this machine is checked when a run starts, not here: a
    configuration may be written on one machine and run on another.
    """
    import torch

    try:
        ok = isinstance(value, str) and torch.device(value).type in ("cpu", "cuda", "mps")
    except (RuntimeError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{attribute.name} must be {DEVICES}, got {value!r}")


def teacher_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A shipped teacher's name or ``"package.module:factory"`` (imported when a run starts)."""
    from risloss.models import list_pretrained

    shipped = sorted(list_pretrained())
    if isinstance(value, str):
        module, sep, factory = value.partition(":")
        if value in shipped or (sep and module and factory):
            return
    raise ValueError(
        f"{attribute.name} must be one of the shipped teachers {shipped} or "
        f"'package.module:factory', got {value!r}"
    )
