"""A griffe extension that renders risloss's reStructuredText-flavoured docstrings as Markdown.

risloss's docstrings are Google-style with a few Sphinx constructs (``:class:`X```,
``:math:`...```, ``.. math::`` blocks, ``Example:`` headings, ``text::`` literal blocks). This
extension rewrites them, while the docs are built, into what mkdocstrings understands:

- ``Example:`` becomes ``Examples:`` (the section griffe parses into highlighted doctests);
- ``.. math::`` blocks become ``$$ ... $$`` and ``:math:`x``` becomes ``$x$`` (MathJax via
  ``pymdownx.arithmatex``);
- ``:class:`risloss.x.Y``` (also ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``,
  ``:exc:``, ``:obj:``) becomes a cross-reference that must resolve (``mkdocs build --strict``
  fails on a typo); a relative name (``:class:`QuantConv2d```) is resolved in the scope of the
  documented object and linked when the target is rendered; a name outside risloss
  (``:func:`torch.func.functional_call```) becomes inline code, since the build stays offline;
- ``text::`` followed by an indented block becomes ``text:`` and a Python code block.

It also gives every ``attrs`` class (``@attrs.frozen``, ``@attrs.define``, ...) the ``__init__``
signature attrs generates, as griffe does for dataclasses, so that configuration classes show
their real constructor and their ``Args:`` sections match it.

The source files are never modified. Loaded by ``mkdocs.yml`` (``extensions:`` of the python
handler).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import (
    Attribute,
    Class,
    Expr,
    ExprCall,
    Extension,
    Function,
    Module,
    NameResolutionError,
    Object,
    Parameter,
    ParameterKind,
    Parameters,
)

__all__ = ["RstDocstrings", "rst_to_markdown"]

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*$")
_LITERAL_INTRO = re.compile(r"^(\s*)(\S.*?)::\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _take_block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The indented block after ``lines[start - 1]`` (deeper than ``base``); returns its end."""
    block: list[str] = []
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
        i -= 1
    return block, i


def _dedent(block: list[str]) -> list[str]:
    depth = min((_indent(b) for b in block if b.strip()), default=0)
    return [b[depth:] if b.strip() else "" for b in block]


def _blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _MATH_DIRECTIVE.match(line)
        literal = _LITERAL_INTRO.match(line) if not m else None
        if m or literal:
            pad = (m or literal).group(1)  # type: ignore[union-attr]
            block, end = _take_block(lines, i + 1, len(pad))
            body = [b for b in _dedent(block)]
            while body and not body[0]:
                body.pop(0)
            if not body:
                out.append(line)
                i += 1
                continue
            if m:
                out.extend([f"{pad}$$", *(f"{pad}{b}" if b else "" for b in body), f"{pad}$$"])
            else:
                assert literal is not None
                out.extend([f"{pad}{literal.group(2)}:", ""])
                out.extend([f"{pad}```python", *(f"{pad}{b}" if b else "" for b in body)])
                out.append(f"{pad}```")
            i = end
            continue
        e = _EXAMPLE.match(line)
        out.append(f"{e.group(1)}Examples:" if e else line)
        i += 1
    return "\n".join(out)


def _display(target: str, short: bool) -> str:
    return target.rsplit(".", 1)[-1] if short else target


def rst_to_markdown(text: str, scope: Object | None = None) -> str:
    """Rewrite one docstring (see the module docstring); ``scope`` resolves relative names."""

    def role(m: re.Match[str]) -> str:
        short, target = bool(m.group(1)), m.group(2).strip()
        shown = f"`{_display(target, short)}`"
        if target.split(".", 1)[0] == "risloss":
            return f"[{shown}][{target}]"
        if scope is not None:
            head, _, rest = target.partition(".")
            try:
                path = scope.resolve(head)
            except (NameResolutionError, Exception):
                return shown
            if path.split(".", 1)[0] == "risloss":
                full = f"{path}.{rest}" if rest else path
                return f'<autoref identifier="{full}" optional>{_code(shown)}</autoref>'
        return shown

    text = _blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    return _ROLE.sub(role, text)


def _code(shown: str) -> str:
    return f"<code>{shown.strip('`')}</code>"


_ATTRS_DECORATORS = frozenset(
    f"{pkg}.{name}"
    for pkg in ("attrs", "attr")
    for name in ("frozen", "define", "mutable", "s", "attrs", "dataclass")
)
_ATTRS_FIELDS = frozenset({"attrs.field", "attr.field", "attr.ib", "attr.attrib"})


def _call_args(expr: object) -> dict[str, Any]:
    if not isinstance(expr, ExprCall):
        return {}
    out: dict[str, Any] = {}
    for argument in expr.arguments:
        name = getattr(argument, "name", None)
        if name is not None:
            out[name] = getattr(argument, "value", None)
    return out


def _attrs_decorator(cls: Class) -> Expr | None:
    for decorator in cls.decorators:
        value = decorator.value
        if isinstance(value, Expr) and value.canonical_path in _ATTRS_DECORATORS:
            return value
    return None


def _attrs_init(cls: Class) -> None:
    """Give an attrs class the ``__init__`` attrs generates (fields in definition order)."""
    decorator = _attrs_decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    options = _call_args(decorator)
    if str(options.get("init", "True")) == "False":
        return
    class_kw_only = str(options.get("kw_only", "False")) == "True"
    params = [Parameter("self", kind=ParameterKind.positional_or_keyword)]
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, Attribute) or member.annotation is None:
            continue
        if "class-attribute" in member.labels and "instance-attribute" not in member.labels:
            if member.value is None:
                continue
        value = member.value
        field = (
            _call_args(value) if getattr(value, "canonical_path", None) in _ATTRS_FIELDS else None
        )
        if field is not None and str(field.get("init", "True")) == "False":
            continue
        if field is None:
            default: Any = value
        elif "factory" in field:
            default = ExprCall(function=field["factory"], arguments=[])
        else:
            default = field.get("default")
        kw_only = class_kw_only or (field is not None and str(field.get("kw_only")) == "True")
        kind = ParameterKind.keyword_only if kw_only else ParameterKind.positional_or_keyword
        params.append(
            Parameter(
                member.name.lstrip("_"),
                annotation=member.annotation,
                kind=kind,
                default=default,
                docstring=member.docstring,
            )
        )
    init = Function("__init__", lineno=0, endlineno=0, parent=cls, returns="None")
    init.parameters = Parameters(*params)
    cls.set_member("__init__", init)


def _walk(obj: Module | Class, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, Class):
        _attrs_init(obj)
    for member in list(obj.members.values()):
        if not isinstance(member, Object):  # an alias: documented where it is defined
            continue
        if isinstance(member, Module | Class):
            _walk(member, seen)
        if member.docstring is not None:
            member.docstring.value = rst_to_markdown(member.docstring.value, member)
    if obj.docstring is not None and isinstance(obj, Module) and obj.parent is None:
        obj.docstring.value = rst_to_markdown(obj.docstring.value, obj)


class RstDocstrings(Extension):
    """Rewrite every docstring of a loaded package and give attrs classes their ``__init__``."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        _walk(pkg, set())
