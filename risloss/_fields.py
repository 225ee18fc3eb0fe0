"""One declaration per setting: its default, its rule and its help text, read by every layer.

A setting is declared once, as an ``attrs`` field made by :func:`setting`, on the lowest class
that owns it (for instance the robustness options on :class:`~risloss.RobustnessConfig`). Every
other place that offers the same setting reads it from there: a higher configuration class
re-declares it with :func:`inherit` (optionally overriding the default, with the reason written
beside the override), a function's keyword default reads :func:`default_of`, and the command
line builds its option from the field's metadata (help text, option name, which commands take
it). The rule is the field's validator (see :mod:`risloss._validators`), so a value is checked
the same way wherever it enters.

Metadata keys (all optional but ``help``):

- ``help``: one line for ``--help`` and the docs, without the default or the range (both are
  added from the field itself);
- ``option``: the command-line option (default: ``--`` + the field name with dashes);
- ``commands``: the commands that take the option (default: every command that runs the
  configuration class); ``()`` hides the setting from the command line;
- ``metavar``: the placeholder shown in ``--help`` (a tuple for an option of several words);
- ``group``: the heading ``--help`` lists the option under (default: the command's options);
- ``default_help``: how ``--help`` words a default that is ``None`` or ``"default"``, whose
  value alone says little (``"as the rest"``, ``"a shipped teacher's own"``);
- ``command_defaults``: ``{command: default}`` where the command line's default differs from
  the library's (write why beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["default_of", "field_of", "inherit", "setting"]


def setting(
    default: Any = attrs.NOTHING,
    *,
    help: str,
    validator: Callable[[Any, attrs.Attribute[Any], Any], None] | None = None,
    converter: Callable[[Any], Any] | None = None,
    option: str | None = None,
    commands: Sequence[str] | None = None,
    metavar: str | tuple[str, ...] | None = None,
    factory: Callable[[], Any] | None = None,
    group: str | None = None,
    default_help: str | None = None,
    command_defaults: Mapping[str, Any] | None = None,
) -> Any:
    """An ``attrs`` field that carries its help text and command-line facts as metadata.

    Example:
        >>> import attrs
        >>> from risloss._fields import default_of, setting
        >>> from risloss._validators import int_in
        >>> @attrs.frozen
        ... class Options:
        ...     draws: int = setting(1, validator=int_in(1, 64), help="draws per step")
        >>> default_of(Options, "draws"), attrs.fields(Options).draws.metadata["help"]
        (1, 'draws per step')
    """
    metadata: dict[str, Any] = {"help": help}
    if option is not None:
        metadata["option"] = option
    if commands is not None:
        metadata["commands"] = tuple(commands)
    if metavar is not None:
        metadata["metavar"] = metavar
    if group is not None:
        metadata["group"] = group
    if default_help is not None:
        metadata["default_help"] = default_help
    if command_defaults is not None:
        metadata["command_defaults"] = dict(command_defaults)
    if factory is not None:
        return attrs.field(
            factory=factory, validator=validator, converter=converter, metadata=metadata
        )
    return attrs.field(default=default, validator=validator, converter=converter, metadata=metadata)


def field_of(cls: type, name: str) -> attrs.Attribute[Any]:
    """The ``attrs`` field ``name`` of ``cls`` (``AttributeError`` naming both if absent)."""
    try:
        return getattr(attrs.fields(cls), name)
    except AttributeError:
        raise AttributeError(f"{cls.__name__} has no setting {name!r}") from None


def default_of(cls: type, name: str) -> Any:
    """The declared default of setting ``name`` of ``cls`` (for a keyword default elsewhere)."""
    f = field_of(cls, name)
    if isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
        return f.default.factory()  # type: ignore[union-attr]
    return f.default


def inherit(cls: type, name: str, *, default: Any = attrs.NOTHING, **metadata: Any) -> Any:
    """Re-declare setting ``name`` of ``cls`` on another class: the same rule, converter and
    help, the same default unless ``default`` overrides it (write why beside the override).

    Example:
        >>> import attrs
        >>> from risloss._fields import default_of, inherit, setting
        >>> @attrs.frozen
        ... class Low:
        ...     eps: float = setting(0.05, help="noise scale")
        >>> @attrs.frozen
        ... class High:
        ...     eps: float = inherit(Low, "eps", default=0.1)
        >>> default_of(High, "eps"), attrs.fields(High).eps.metadata["help"]
        (0.1, 'noise scale')
    """
    f = field_of(cls, name)
    value = f.default if default is attrs.NOTHING else default
    meta = {**f.metadata, **metadata}
    if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
        return attrs.field(
            default=value, validator=f.validator, converter=f.converter, metadata=meta
        )
    return attrs.field(default=value, validator=f.validator, converter=f.converter, metadata=meta)
