"""Command-line options generated from the fields of a configuration class.

Each field made by :func:`risloss._fields.setting` becomes one option of the commands its
metadata names: the option name, help text, metavar and heading come from the metadata; the
type and the choices from the annotation and the rule (:mod:`risloss._validators`); the range
printed in ``--help`` is the rule's ``text``; the default printed is the configuration's own for
that command. The parsed value is not given a default: an option left out is left out of the
namespace, so the configuration class applies its own default (task-dependent ones included),
and nothing here copies one. An option the configuration rejects is named in the message by
:func:`in_option_terms`.
"""

from __future__ import annotations

import argparse
import math
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from risloss._validators import Rule, boolean, one_of, optional

__all__ = [
    "TRAIN_CONVERT",
    "TRAIN_SPECIAL",
    "Special",
    "add_settings",
    "finite_numbers",
    "in_option_terms",
    "number",
    "option_names",
    "option_of",
    "ruled",
    "settings_of",
    "shown_default",
    "whole_number",
]

Special = Callable[[Any, "attrs.Attribute[Any]", dict[str, Any]], None]
"""``add(group, field, kwargs)``: adds the option(s) of a field that no generic rule parses;
``kwargs`` holds the generated ``dest``, ``default``, ``help`` and ``metavar``."""


def whole_number(text: str) -> int:
    """An argparse type: ``"12"`` -> ``12``; any other word is a one-line error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """An argparse type: ``"0.5"`` -> ``0.5``; any other word is a one-line error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def ruled(parse: Callable[[str], Any], rule: Rule) -> Callable[[str], Any]:
    """An argparse type that parses a word, then checks it against ``rule``.

    For options that no configuration class checks (``train-teacher``'s); the error reads
    ``expected <the rule's text>, got <value>``.
    """

    def parse_and_check(text: str) -> Any:
        value = parse(text)
        if not rule.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {rule.text}, got {value!r}")
        return value

    return parse_and_check


def option_of(field: attrs.Attribute[Any]) -> str:
    """The option that sets ``field``: its ``option`` metadata, else ``--`` + dashed name."""
    return str(field.metadata.get("option", "--" + field.name.replace("_", "-")))


def shown_default(field: attrs.Attribute[Any], value: Any) -> str:
    """How ``--help`` words the default ``value`` of ``field``."""
    follows = bool(getattr(field.default, "takes_self", False))  # a default from other fields
    if value is None or value == "default" or (follows and "default_help" in field.metadata):
        return str(field.metadata.get("default_help", "none"))  # or one that follows others
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _range_text(rule: Any) -> str:
    """The rule's text where ``--help`` shows it (choices and flags show themselves)."""
    if isinstance(rule, optional):
        rule = rule.rule
    if not isinstance(rule, Rule) or isinstance(rule, one_of) or rule is boolean:
        return ""
    return rule.text


def _takes(field: attrs.Attribute[Any], command: str) -> bool:
    commands = field.metadata.get("commands")
    return commands is None or command in commands


def _scalar(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations as they are."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return annotation


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    command: str,
    *,
    sample: Any,
    prefix: str,
    title: str | None = None,
    choices: Mapping[str, tuple[Any, ...]] | None = None,
    special: Mapping[str, Special] | None = None,
) -> None:
    """Add to ``parser`` one option per field of ``cls`` that ``command`` takes.

    Args:
        parser: the command's parser.
        cls: an ``attrs`` class whose fields are declared with :func:`risloss._fields.setting`.
        command: the command; a field whose ``commands`` metadata leaves it out is skipped.
        sample: an instance with the command's defaults, shown in ``--help``.
        prefix: the options' ``dest`` is ``prefix + field name`` (see :func:`settings_of`).
        title: the heading of the options (``None``: the parser's own options); a field's
            ``group`` metadata overrides it.
        choices: the allowed values of a field for this command, where fewer than its rule's.
        special: how to add the options of fields that need more than a type (by field name).
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str | None, Any] = {None: parser}
    for field in attrs.fields(cls):
        if not _takes(field, command):
            continue
        heading = field.metadata.get("group", title)
        if heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        defaults: Mapping[str, Any] = field.metadata.get("command_defaults", {})
        default = defaults.get(command, getattr(sample, field.name))
        text = _range_text(field.validator)
        kwargs: dict[str, Any] = {
            "dest": prefix + field.name,
            "default": defaults.get(command, argparse.SUPPRESS),
            "help": f"{field.metadata.get('help', '')}{': ' + text if text else ''} "
            f"(default: {shown_default(field, default)})",
        }
        if "metavar" in field.metadata:
            kwargs["metavar"] = field.metadata["metavar"]
        if special and field.name in special:
            special[field.name](groups[heading], field, kwargs)
            continue
        allowed = (choices or {}).get(field.name)
        if allowed is None and isinstance(field.validator, one_of):
            allowed = field.validator.allowed
        _add_one(groups[heading], field, _scalar(hints[field.name]), default, allowed, kwargs)


def _add_one(
    group: Any,
    field: attrs.Attribute[Any],
    kind: Any,
    default: Any,
    allowed: tuple[Any, ...] | None,
    kwargs: dict[str, Any],
) -> None:
    option = option_of(field)
    if kind is bool:
        kwargs.pop("metavar", None)
        if default is False:
            kwargs.update(action="store_true", help=field.metadata.get("help"))
        elif option == "--" + field.name.replace("_", "-"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:  # an option that turns the setting off: --local-batch-statistics
            kwargs.update(action="store_false", help=field.metadata.get("help"))
    elif allowed is not None:
        kwargs["choices"] = allowed
    elif kind is str:
        kwargs.setdefault("metavar", field.name.upper())
    elif typing.get_origin(kind) is tuple:
        kwargs.update(nargs="+", type=number)
        kwargs.setdefault("metavar", "X")
    elif kind is int:
        kwargs.setdefault("metavar", "N")
        kwargs["type"] = whole_number
    elif kind is float:
        kwargs.setdefault("metavar", "X")
        kwargs["type"] = number
    group.add_argument(option, **kwargs)


def settings_of(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The options given on the command line (and the commands' own defaults), by field name."""
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}


def option_names(parser: argparse.ArgumentParser, prefix: str) -> dict[str, str]:
    """Field -> the option that sets it (``batch_size`` -> ``--batch-size``), for the options
    whose ``dest`` starts with ``prefix``."""
    names: dict[str, str] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest.startswith(prefix):
            names.setdefault(action.dest[len(prefix) :], longs[0])
    return names


def in_option_terms(message: str, options: Mapping[str, str], *, everywhere: bool) -> str:
    """Name the command-line options where the library names configuration fields.

    ``everywhere``: rename every field in the message (messages of the configuration classes);
    otherwise only a field that starts the message (messages of a run, whose other words may
    be field names by chance: "data set").

    Example:
        >>> from risloss._cli_options import in_option_terms
        >>> names = {"warmup": "--warmup", "iters": "--iters", "batch_size": "--batch-size"}
        >>> in_option_terms("warmup must be <= iters (10), got 20", names, everywhere=True)
        '--warmup must be <= --iters (10), got 20'
        >>> in_option_terms("set batch_size=4 in the data set", names, everywhere=True)
        'set --batch-size 4 in the data set'
    """
    if not options:
        return message
    alternatives = "|".join(re.escape(k) for k in sorted(options, key=len, reverse=True))
    pattern = rf"(?<![\w.:'\"/-])({alternatives})(?![\w'\"/-])(=?)"
    if not everywhere:
        pattern = "^" + pattern

    def rename(m: re.Match[str]) -> str:
        return options[m.group(1)] + (" " if m.group(2) else "")

    return " ".join(re.sub(pattern, rename, message).split())


# TrainConfig's fields whose options take more than one word of one type.


def finite_numbers(text: str) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> ``(0.5, 0.5, 0.5)``: comma-separated finite numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}"
        )
    return values


def _image_size(text: str) -> Any:
    return None if text == "none" else whole_number(text)


def _whole_or_none(text: str) -> int | None:
    return None if text == "none" else whole_number(text)


class _Normalize(argparse.Action):
    """``--normalize MEAN STD``: one number per channel in each, as many in both, std > 0."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        mean, std = values
        if len(mean) != len(std):
            raise argparse.ArgumentError(
                self, f"MEAN and STD need as many values, got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise argparse.ArgumentError(self, f"STD values must be > 0, got {std}")
        setattr(namespace, self.dest, (mean, std))


def _add_normalize(group: Any, field: attrs.Attribute[Any], kwargs: dict[str, Any]) -> None:
    both = group.add_mutually_exclusive_group()
    both.add_argument(option_of(field), nargs=2, type=finite_numbers, action=_Normalize, **kwargs)
    both.add_argument(
        "--no-normalize",
        dest=kwargs["dest"],
        action="store_const",
        const=None,
        default=argparse.SUPPRESS,
        help="keep the data's pixels in [0, 1] (for models that take such images)",
    )


def _input_range(words: list[str]) -> Any:
    """``--input-range``'s words as :class:`~risloss.training.TrainConfig` takes them."""
    if len(words) == 1 and words[0] in ("auto", "none"):
        return words[0]
    try:
        low, high = (float(w) for w in words)
    except ValueError:
        raise ValueError(
            f"input_range must be auto, none or LOW HIGH (two numbers), got {words}"
        ) from None
    return (low, high)


TRAIN_SPECIAL: Mapping[str, Special] = {
    "image_size": lambda g, f, kw: g.add_argument(option_of(f), type=_image_size, **kw),
    "normalize": _add_normalize,
    "input_range": lambda g, f, kw: g.add_argument(option_of(f), nargs="+", **kw),
    "fit_input_statistics": lambda g, f, kw: g.add_argument(
        option_of(f), action=argparse.BooleanOptionalAction, **kw
    ),
    # "none": the first step on the iteration's batch (the default of quantize and prune)
    "student_batch_size": lambda g, f, kw: g.add_argument(option_of(f), type=_whole_or_none, **kw),
}
"""How the options of these fields of :class:`~risloss.training.TrainConfig` are added."""

TRAIN_CONVERT: Mapping[str, Callable[[Any], Any]] = {"input_range": _input_range}
"""How these options' parsed words become the field's value (``ValueError`` naming it)."""
