"""The rules a setting's value must follow, one object per rule, used wherever a value enters.

A rule is an ``attrs`` validator (``attrs.field(validator=int_in(1, 64))``) and, through
:func:`check`, the check of a plain keyword argument (``check(int_in(1, 64), "num_draws", n)``),
so a configuration class, a function and a module reject a value with the same words. Every
message reads ``"<name> must be <allowed>, got <value>"``; a rule keeps ``<allowed>`` as
``.text``, which the command line also prints in ``--help``.

A value of the wrong type (a string for a number, ``True`` for an integer) raises
:class:`InvalidTypeError`, a subclass of both ``TypeError`` and ``ValueError``; a value of the
right type outside the rule raises ``ValueError``.

Example:
    >>> from risloss._validators import check, int_in
    >>> check(int_in(1, 64), "num_draws", 2)
    2
    >>> check(int_in(1, 64), "num_draws", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_draws must be an integer in 1..64, got 0
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import attrs

__all__ = [
    "InvalidTypeError",
    "Rule",
    "bits",
    "boolean",
    "channel_values",
    "check",
    "choices_of",
    "device_name",
    "finite",
    "int_at_least",
    "int_in",
    "is_callable",
    "non_negative",
    "number_in",
    "one_of",
    "optional",
    "optional_bits",
    "positive",
]

T = TypeVar("T")


class InvalidTypeError(TypeError, ValueError):
    """A value of the wrong type for its rule; ``except TypeError`` and ``except ValueError``
    both catch it."""


class Rule:
    """Base of the rules: ``accepts(value)`` and the text ``text`` of what is allowed.

    A subclass defines :meth:`accepts` and :attr:`text`, and :meth:`right_type` where a value of
    another type is a :class:`InvalidTypeError` rather than a ``ValueError``.
    """

    @property
    def text(self) -> str:
        """What the rule allows, as the message and ``--help`` write it."""
        raise NotImplementedError

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` follows the rule."""
        raise NotImplementedError

    def right_type(self, value: Any) -> bool:
        """Whether ``value`` has a type the rule can accept (default: any type)."""
        return True

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if self.accepts(value):
            return
        error = ValueError if self.right_type(value) else InvalidTypeError
        raise error(f"{attribute.name} must be {self.text}, got {value!r}")


@attrs.frozen
class _Name:
    """Stands in for the ``attrs.Attribute`` a rule reads the name from."""

    name: str


def check(rule: Rule, name: str, value: T) -> T:
    """Check a keyword argument ``name`` against ``rule``; return it unchanged.

    Raises:
        ValueError: ``value`` breaks the rule (:class:`InvalidTypeError`, also a ``TypeError``,
            for a value of the wrong type); the message names ``name`` and the allowed values.

    Example:
        >>> from risloss._validators import check, one_of
        >>> check(one_of(("mean", "sum")), "reduction", "max")
        Traceback (most recent call last):
        ...
        ValueError: reduction must be one of ('mean', 'sum'), got 'max'
    """
    rule(None, _Name(name), value)  # type: ignore[arg-type]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class one_of(Rule):
    """The value must be one of ``allowed`` (kept as ``.allowed`` for command-line choices)."""

    allowed: tuple[Any, ...]

    @property
    def text(self) -> str:
        return f"one of {self.allowed}"

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.allowed
        except TypeError:  # an unhashable value compared with a hashable one
            return False


def choices_of(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of every field of an attrs class validated by :class:`one_of`."""
    return {
        f.name: f.validator.allowed for f in attrs.fields(cls) if isinstance(f.validator, one_of)
    }


@attrs.frozen
class int_in(Rule):
    """An ``int`` (not a ``bool``) in ``low..high`` (``high=None``: no upper bound).

    Example:
        >>> from risloss._validators import int_in
        >>> int_in(1, 64).allowed
        'an integer in 1..64'
    """

    low: int
    high: int | None = None

    @property
    def text(self) -> str:
        if self.high is None:
            return f"an integer >= {self.low}"
        return f"an integer in {self.low}..{self.high}"

    @property
    def allowed(self) -> str:
        """The same as :attr:`text`."""
        return self.text

    def right_type(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def accepts(self, value: Any) -> bool:
        return (
            self.right_type(value)
            and value >= self.low
            and (self.high is None or value <= self.high)
        )


def int_at_least(low: int) -> int_in:
    """The value must be an ``int`` (not a ``bool``) ``>= low``."""
    return int_in(low)


def _bound(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


@attrs.frozen
class number_in(Rule):
    """A finite number in ``[low, high]`` (open ends with ``open_low``/``open_high``); NaN and
    booleans rejected.

    Example:
        >>> from risloss._validators import number_in
        >>> number_in(0.0, 1000.0).allowed
        'a finite number in [0, 1000]'
        >>> number_in(0.0, 10.0, open_low=True).allowed
        'a finite number in (0, 10]'
        >>> number_in(0.0, 1.0, open_high=True).allowed
        'a finite number in [0, 1)'
    """

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    @property
    def text(self) -> str:
        left = "(" if self.open_low else "["
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        if math.isinf(self.high):  # the wording of the unbounded validators below
            sign = ">" if self.open_low else ">="
            low = _bound(self.low)
            return f"a finite number {sign} {low} (allowed range {left}{low}, inf))"
        right = ")" if self.open_high else "]"
        return f"a finite number in {left}{_bound(self.low)}, {_bound(self.high)}{right}"

    @property
    def allowed(self) -> str:
        """The same as :attr:`text`."""
        return self.text

    def right_type(self, value: Any) -> bool:
        return _is_number(value)

    def accepts(self, value: Any) -> bool:
        return (
            _is_number(value)
            and math.isfinite(value)
            and (value > self.low if self.open_low else value >= self.low)
            and (value < self.high if self.open_high else value <= self.high)
        )


finite = number_in(-math.inf)
"""Any finite number (NaN and infinity rejected)."""

non_negative = number_in(0.0)
"""A finite number ``>= 0`` (NaN and infinity rejected)."""

positive = number_in(0.0, open_low=True)
"""A finite number ``> 0``."""

bits = int_in(2, 16)
"""An integer bit width in 2..16."""


@attrs.frozen
class optional(Rule):
    """``None``, or a value that follows ``rule``.

    Example:
        >>> from risloss._validators import bits, optional
        >>> optional(bits).text
        'an integer in 2..16 or None'
    """

    rule: Rule

    @property
    def text(self) -> str:
        return f"{self.rule.text} or None"

    def right_type(self, value: Any) -> bool:
        return value is None or self.rule.right_type(value)

    def accepts(self, value: Any) -> bool:
        return value is None or self.rule.accepts(value)


optional_bits = optional(bits)
"""``None`` or an integer bit width in 2..16."""


@attrs.frozen
class _Boolean(Rule):
    @property
    def text(self) -> str:
        return "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    right_type = accepts


boolean = _Boolean()
"""``True`` or ``False`` only (not 0/1)."""


@attrs.frozen
class _Callable(Rule):
    @property
    def text(self) -> str:
        return "callable"

    def accepts(self, value: Any) -> bool:
        return callable(value)

    right_type = accepts


is_callable = _Callable()
"""A callable (a function, a class, an object with ``__call__``)."""


@attrs.frozen
class _Device(Rule):
    @property
    def text(self) -> str:
        return "'cpu', 'cuda', 'cuda:N' or 'mps'"

    def right_type(self, value: Any) -> bool:
        return isinstance(value, str)

    def accepts(self, value: Any) -> bool:
        import torch

        try:
            return isinstance(value, str) and torch.device(value).type in ("cpu", "cuda", "mps")
        except (RuntimeError, TypeError, ValueError):
            return False


device_name = _Device()
"""A name :class:`torch.device` accepts, of type CPU, CUDA or MPS (``"cuda:abc"`` fails).

Whether the device exists on this machine is checked when a run starts, not here: a
configuration may be written on one machine and run on another.
"""


@attrs.frozen
class channel_values(Rule):
    """One or more finite numbers, one per channel (``> 0`` each with ``positive``).

    Example:
        >>> from risloss._validators import channel_values
        >>> channel_values(positive=True).text
        'finite numbers > 0 (one per channel)'
    """

    positive: bool = False

    @property
    def text(self) -> str:
        return f"finite numbers{' > 0' if self.positive else ''} (one per channel)"

    def right_type(self, value: Any) -> bool:
        return isinstance(value, tuple | list) and all(_is_number(v) for v in value)

    def accepts(self, value: Any) -> bool:
        return (
            self.right_type(value)
            and len(value) > 0
            and all(math.isfinite(v) and (v > 0 or not self.positive) for v in value)
        )
