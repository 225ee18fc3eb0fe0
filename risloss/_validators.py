"""attrs validators shared by the configuration classes; each error names the field."""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "boolean",
    "choices_of",
    "int_at_least",
    "non_negative",
    "one_of",
    "optional_bits",
    "positive",
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


def int_at_least(low: int) -> Any:
    """The value must be an ``int`` (not a ``bool``) ``>= low``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{attribute.name} must be an integer >= {low}, got {value!r}")

    return check


def non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A finite number ``>= 0`` (NaN and infinity rejected)."""
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{attribute.name} must be a finite number >= 0 (allowed range [0, inf)), got {value!r}"
        )


def positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A finite number ``> 0``."""
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"{attribute.name} must be a finite number > 0 (allowed range (0, inf)), got {value!r}"
        )


def bits(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An integer bit width in 2..16."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        raise ValueError(f"{attribute.name} must be an integer in 2..16, got {value!r}")


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
