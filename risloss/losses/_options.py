"""Read-only, validated options of the loss modules: each declared once on its class.

A loss module is a thin ``nn.Module`` over its function. Its options are class attributes made
by :func:`option` (the rule each value must follow, and how it is stored); ``__init__`` hands
the values to :meth:`OptionsModule._configure`, which checks each with its rule (a
``ValueError`` naming the argument and the allowed values), and the options read back as plain
attributes, refuse assignment and appear in the module's ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from risloss._validators import Rule, check

__all__ = ["OptionsModule", "option"]


class _Option:
    """The descriptor :func:`option` returns."""

    def __init__(self, rule: Rule, convert: Callable[[Any], Any] | None) -> None:
        self.rule = rule
        self.convert = convert
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"{type(obj).__name__}.{self.name} is read-only; build a new "
            f"{type(obj).__name__} to change it"
        )


def option(rule: Rule, *, convert: Callable[[Any], Any] | None = None) -> Any:
    """A read-only option of an :class:`OptionsModule`, checked against ``rule`` once.

    Args:
        rule: what the value must be (see :mod:`risloss._validators`).
        convert: applied to the value after the check (e.g. ``float``).
    """
    return _Option(rule, convert)


class OptionsModule(nn.Module):
    """An ``nn.Module`` whose configuration is a set of read-only :func:`option` attributes.

    Example:
        >>> from risloss._validators import one_of
        >>> from risloss.losses._options import OptionsModule, option
        >>> class Scaled(OptionsModule):
        ...     reduction = option(one_of(("mean", "sum")))
        ...     def __init__(self, reduction="mean"):
        ...         super().__init__()
        ...         self._configure(reduction=reduction)
        >>> Scaled("sum")
        Scaled(reduction='sum')
        >>> Scaled("max")
        Traceback (most recent call last):
        ...
        ValueError: reduction must be one of ('mean', 'sum'), got 'max'
    """

    @classmethod
    def _options(cls) -> dict[str, _Option]:
        found: dict[str, _Option] = {}
        for klass in reversed(cls.__mro__):
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, _Option)})
        return found

    def _configure(self, **values: Any) -> None:
        """Check and store the options, in the order given."""
        declared = self._options()
        for name, value in values.items():
            spec = declared[name]
            check(spec.rule, name, value)
            self.__dict__[name] = value if spec.convert is None else spec.convert(value)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self._options())
