"""The package's import layers: no module imports from a layer above its own, and no cycles.

The layers, lowest first, are listed in :data:`LAYERS`; a module may import from its own layer
and from any layer below it (imports inside functions count too). A new top-level module must
be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "risloss"

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "_fields",
        "_version",
        "_validators",
        "_util",
        "_checkpoint",
        "_imports",
        "_streams",
        "_resources",
        "_stateless",
    ),
    ("functional",),
    ("quant",),
    ("hooks",),
    ("perturb",),
    ("losses",),
    ("objective",),
    ("pruning", "_eval"),
    ("data", "_datacheck", "_outputs"),
    ("models",),
    ("distributed",),
    ("training",),
    ("export",),
    ("_cli_options", "_cli_folders", "_cli_teacher", "cli"),
    ("__init__", "__main__"),
)
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["risloss", *parts])


def _level(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LEVEL["__init__"]
    if parts[1] not in LEVEL:
        raise AssertionError(f"{module}: its top-level name {parts[1]!r} has no layer in LAYERS")
    return LEVEL[parts[1]]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``risloss`` module ``path`` imports (``from risloss import x`` names module x when
    x is a submodule), with the line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("risloss")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("risloss"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                sub = ROOT.joinpath(*candidate.split(".")[1:])
                is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                found.append((candidate if is_module else node.module, node.lineno))
    return found


FILES = sorted(ROOT.rglob("*.py"))


def test_every_top_level_name_has_a_layer() -> None:
    names = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in FILES}
    assert names - set(LEVEL) == set()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_from_a_higher_layer(path: Path) -> None:
    me = _module_name(path)
    own = _level(me) if path.name != "__init__.py" or path.parent != ROOT else LEVEL["__init__"]
    upward = [f"line {line}: {target}" for target, line in _imports(path) if _level(target) > own]
    assert upward == [], f"{me} imports from a higher layer: {upward}"


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in FILES:
        graph[_module_name(path)] = {t for t, _ in _imports(path)}
    # A package imports its submodules and they import each other through it: only cycles
    # that do not pass through a package's own __init__ count.
    packages = {_module_name(p) for p in FILES if p.name == "__init__.py"}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in packages:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node not in packages:
            visit(node)
    assert cycles == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule is live: a loss module that imports the trainer would be caught."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from risloss import training\n    from risloss.cli import main\n"
    )
    levels = [_level(target) for target, _ in _imports(probe)]
    assert levels == [LEVEL["training"], LEVEL["cli"]]
    assert all(level > LEVEL["losses"] for level in levels)
