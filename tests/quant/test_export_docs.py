"""The deployment guide's tables are those of the committed export benchmark results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guides" / "deploy-onnx.md"
START, END = "<!-- export-table:start -->\n", "\n<!-- export-table:end -->"


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "benchmarks" / "export.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guide_tables_match_the_committed_results() -> None:
    text = PAGE.read_text()
    shown = text[text.index(START) + len(START) : text.index(END)]
    assert shown == _benchmark().table(), "run python benchmarks/export.py --table"


def test_committed_results_meet_the_targets() -> None:
    """The default exports agree with the simulation (per-image argmax, top-1)."""
    records = [
        json.loads(p.read_text())
        for p in sorted((ROOT / "benchmarks" / "results" / "export").glob("export-*.json"))
    ]
    defaults = [r for r in records if not r["export_options"]]
    assert {(r["w_bits"], r["a_bits"]) for r in defaults} == {(8, 8), (4, 4)}
    for r in defaults:
        assert r["agreement"] >= 99.5, r["name"]
        assert abs(r["top1_difference"]) <= 0.1, r["name"]
        assert r["num_test_images"] == 10000
        assert r["file_bytes"]["exported"] < r["file_bytes"]["float32"]
