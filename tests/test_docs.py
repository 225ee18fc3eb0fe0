"""The documentation site: its code runs, its API reference is complete, it builds strictly.

1. Every ```python block of ``docs/**/*.md`` is executed: the blocks of one page in order, in one
   namespace per page, in a temporary working directory. Other fenced blocks must be marked
   ``bash`` or ``text`` (shell commands and output are not run), so no code escapes the test.
   A page that needs the Fashion-MNIST files says so with the line
   ``<!-- docs-test: needs fashion-mnist -->``.
2. Every public module has an API page that is a ``::: module`` stub, and the built site has an
   entry (an HTML anchor ``id="module.name"``) for every name of the module's ``__all__``.
3. ``mkdocs build --strict`` succeeds, with no warning. Without mkdocs (the ``docs`` extra) the
   site tests are skipped, except in CI (``CI`` set), where that is a failure.
4. Every ``risloss ...`` command line of a ``bash`` block is accepted by the command-line parser
   (it is parsed, not run).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = {
    "risloss": "api/risloss.md",
    "risloss.functional": "api/functional.md",
    "risloss.losses": "api/losses.md",
    "risloss.objective": "api/objective.md",
    "risloss.perturb": "api/perturb.md",
    "risloss.hooks": "api/hooks.md",
    "risloss.quant": "api/quant.md",
    "risloss.pruning": "api/pruning.md",
    "risloss.models": "api/models.md",
    "risloss.data": "api/data.md",
    "risloss.training": "api/training.md",
    "risloss.distributed": "api/distributed.md",
    "risloss.export": "api/export.md",
}
NEEDS_DATA = "<!-- docs-test: needs fashion-mnist -->"
ALLOWED_FENCES = {"python", "bash", "text"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^`\n]*)$")


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of every fenced block of a Markdown text."""
    blocks: list[tuple[str, int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        language = m.group("info").strip().split(" ")[0].lstrip(".").split("{")[0]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"unclosed code fence at line {i + 1}")
        blocks.append((language, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def test_fenced_blocks_parser() -> None:
    text = "intro\n```python\nx = 1\n```\n\n    ```bash\n    echo hi\n    ```\n~~~text\nout\n~~~\n"
    assert fenced_blocks(text) == [
        ("python", 3, "x = 1\n"),
        ("bash", 7, "echo hi\n"),
        ("text", 10, "out\n"),
    ]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_block_is_run_or_marked(page: Path) -> None:
    """Every fenced block is python (executed below), bash or text (shell, output)."""
    for language, line, _ in fenced_blocks(page.read_text()):
        assert language in ALLOWED_FENCES, (
            f"{page.relative_to(ROOT)}:{line}: a code block marked {language!r}; mark it "
            f"python (it is then executed by this test), bash or text"
        )


def _python_pages() -> list[Path]:
    return [p for p in _pages() if any(b[0] == "python" for b in fenced_blocks(p.read_text()))]


@pytest.mark.slow
@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the page's python blocks in order in one namespace (their output shows with -s)."""
    text = page.read_text()
    if NEEDS_DATA in text:
        from tests._data import fashion_mnist_or_skip

        fashion_mnist_or_skip("test")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for language, line, code in fenced_blocks(text):
        if language != "python":
            continue
        name = f"{page.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, name, "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"the code block at {name} failed: {exc!r}") from exc


def risloss_commands(code: str) -> list[list[str]]:
    """The arguments of every ``risloss ...`` command line of a shell block."""
    commands: list[list[str]] = []
    joined = re.sub(r"\\\n\s*", " ", code)
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        tokens = shlex.split(re.sub(r"\$\{?\w+\}?", "0", line))
        for i, token in enumerate(tokens):
            if Path(token).name == "risloss":
                args = []
                for arg in tokens[i + 1 :]:
                    if arg in ("&", "&&", ";", "|", "||"):
                        break
                    args.append(arg)
                commands.append(args)
                break
    return commands


def test_risloss_commands_parser() -> None:
    comment = "# note: risloss quantize\n"
    code = comment + "A=1 .venv/bin/risloss quantize --seed $seed \\\n    --quiet &\n"
    assert risloss_commands(code) == [["quantize", "--seed", "0", "--quiet"]]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_shell_commands_parse(page: Path) -> None:
    """Every ``risloss`` command shown in the docs is accepted by the command-line parser."""
    from risloss.cli import build_parser

    parser = build_parser()
    for language, line, code in fenced_blocks(page.read_text()):
        if language != "bash":
            continue
        for args in risloss_commands(code):
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                raise AssertionError(
                    f"{page.relative_to(ROOT)}:{line}: `risloss {shlex.join(args)}` is rejected "
                    "by the command-line parser"
                ) from exc


def _pages_of_module() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for page in (DOCS / "api").glob("*.md"):
        for line in page.read_text().splitlines():
            m = re.match(r"^:::\s+(\S+)\s*$", line)
            if m:
                found.setdefault(m.group(1), []).append(f"api/{page.name}")
    return found


def test_every_public_module_has_a_stub_page() -> None:
    found = _pages_of_module()
    for module, page in PUBLIC_MODULES.items():
        assert found.get(module) == [page], f"{module} needs exactly one stub, in docs/{page}"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PUBLIC_MODULES.values():
        assert f": {page}" in nav, f"{page} is not in the nav of mkdocs.yml"


def test_cli_page_is_current() -> None:
    """docs/cli.md is the parser's own help text (rewrite it with docs/scripts/make_cli.py)."""
    spec = importlib.util.spec_from_file_location("make_cli", DOCS / "scripts" / "make_cli.py")
    assert spec is not None and spec.loader is not None
    make_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_cli)
    assert (DOCS / "cli.md").read_text() == make_cli.render(), (
        "docs/cli.md is out of date: run python docs/scripts/make_cli.py"
    )


def test_benchmarks_page_has_generated_markers() -> None:
    text = (DOCS / "benchmarks.md").read_text()
    begin, end = text.find("<!-- BEGIN GENERATED -->"), text.find("<!-- END GENERATED -->")
    assert 0 <= begin < end, "docs/benchmarks.md needs the BEGIN/END GENERATED markers, in order"
    assert text.count("<!-- BEGIN GENERATED -->") == text.count("<!-- END GENERATED -->") == 1


def _need_docs_tooling() -> None:
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
        or importlib.util.find_spec(name) is None
    ]
    if missing:
        reason = (
            f"the docs tooling is not installed (missing: {', '.join(missing)}); "
            'install it with pip install -e ".[docs]"'
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must build the documentation")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_docs_tooling()
    site = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "mkdocs build reported:\n" + "\n".join(warnings)
    return site


@pytest.mark.slow
def test_site_builds_strictly(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    assert (built_site / "assets" / "synthetic_vs_real.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_api_reference_lists_every_public_name(built_site: Path, module: str) -> None:
    page = PUBLIC_MODULES[module].removesuffix(".md")
    html = (built_site / page / "index.html").read_text()
    names = importlib.import_module(module).__all__
    missing = [name for name in names if f'id="{module}.{name}"' not in html]
    assert not missing, f"docs/{page}.md renders no entry for {missing}"


def _griffe_rst() -> Any:
    if importlib.util.find_spec("griffe") is None:
        _need_docs_tooling()
        pytest.skip("griffe is not installed")
    spec = importlib.util.spec_from_file_location("griffe_rst", DOCS / "scripts" / "griffe_rst.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_rewriting() -> None:
    """The build-time rewriting of the docstrings' reStructuredText constructs."""
    convert = _griffe_rst().rst_to_markdown
    text = (
        "Summary with :math:`x^2` and :func:`~risloss.functional.prediction_divergence`.\n"
        "\n"
        "    .. math::\n"
        "\n"
        "        L = a + b\n"
        "\n"
        "See :class:`torch.nn.Conv2d` and :mod:`risloss.quant`.\n"
        "\n"
        "Example:\n"
        "    >>> 1 + 1\n"
        "    2\n"
    )
    out = convert(text)
    assert "$x^2$" in out
    assert "[`prediction_divergence`][risloss.functional.prediction_divergence]" in out
    assert "    $$\n    L = a + b\n    $$" in out
    assert "`torch.nn.Conv2d`" in out and ":class:" not in out
    assert "[`risloss.quant`][risloss.quant]" in out
    assert "\nExamples:\n    >>> 1 + 1" in out
