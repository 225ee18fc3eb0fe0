"""The benchmark scripts: what they plan, what they write, and that the docs match the results."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests._data import fashion_mnist_or_skip

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
REQUIRED = {"method", "w_bits", "a_bits", "seed", "profile", "quant_top1", "suite", "row"}


def _script(name: str, folder: Path = BENCH) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dfq() -> ModuleType:
    return _script("dfq")


def _plan(dfq: ModuleType, *args: str) -> list[dict]:
    ns = argparse.Namespace(
        profile="full", suite="quant", rows=None, variants=None, tasks=None, bits=None,
        seeds=[0, 1, 2],
        model="resnet20_fashion_mnist", device="cpu", iters=None, results=str(BENCH / "results"),
    )  # fmt: skip
    for pair in zip(args[::2], args[1::2], strict=True):
        setattr(ns, pair[0], pair[1])
    return dfq.plan(ns)


def test_plan_quant_suite(dfq: ModuleType) -> None:
    jobs = _plan(dfq)
    names = [Path(j["path"]).name for j in jobs]
    # one fp run, then 9 rows x 2 bit widths x 3 seeds
    assert len(jobs) == 1 + 9 * 2 * 3 and len(set(names)) == len(names)
    assert names.count("quant-fp.json") == 1
    ptq = [j for j in jobs if j["row"] == "ptq-noise"]
    # post-training quantization: the run is the default warm-up (a third of 300 iterations)
    assert all(j["config"]["iters"] == j["config"]["warmup"] == 100 for j in ptq)
    ris = next(j for j in jobs if j["row"] == "ris")
    assert ris["config"]["iters"] == 300 and ris["ris"] == {}


def test_plan_ablation_reuses_the_ris_row(dfq: ModuleType) -> None:
    jobs = _plan(dfq, "suite", "ablation")
    assert {j["w_bits"] for j in jobs} == {3}  # the ablation runs at W3A3 unless told otherwise
    default = [j for j in jobs if j["suite"] == "quant"]
    assert {Path(j["path"]).name for j in default} == {
        f"quant-quantize-ris-w3a3-s{s}.json" for s in range(3)
    }
    variants = {j["row"] for j in jobs if j["suite"] == "ablation"}
    assert variants == set(dfq.ABLATION) - {"default"}
    for j in jobs:
        if j["suite"] == "ablation":
            assert j["ris"] == dfq.ABLATION[j["row"]]


def test_plan_all_has_no_duplicates(dfq: ModuleType) -> None:
    jobs = _plan(dfq, "suite", "all")
    paths = [j["path"] for j in jobs]
    assert len(paths) == len(set(paths))
    assert {j["suite"] for j in jobs} == {"quant", "ablation", "extension"}


def test_plan_extension_selects_tasks_and_rows(dfq: ModuleType) -> None:
    every = _plan(dfq, "suite", "extension")
    assert {j["task"] for j in every} == {"distill", "prune50", "prune80", *dfq.EXTENSION_VARIANTS}
    jobs = _plan(dfq, "suite", "extension", "tasks", ["distill"], "rows", ["ris", "gdfq"])
    names = sorted(Path(j["path"]).name for j in jobs)
    assert names == sorted(
        f"extension-distill-{row}-fp32-s{s}.json" for row in ("ris", "gdfq") for s in range(3)
    )


def test_plan_long_profile(dfq: ModuleType) -> None:
    jobs = _plan(dfq, "profile", "long")
    assert {(j["row"], j["w_bits"]) for j in jobs} == {("gdfq", 3), ("ris", 3), ("real", 3)}
    assert all(j["config"]["iters"] == 1200 and "/long/" in j["path"] for j in jobs)
    # a row selection on a profile that names its rows: every job is still a valid config
    from risloss.training import RISConfig, TrainConfig

    chosen = _plan(dfq, "profile", "long", "rows", ["ris"])
    assert [j["row"] for j in chosen] == ["ris"] * 3
    for job in jobs + chosen:
        TrainConfig(ris=RISConfig(**job["ris"]), **job["config"])


def test_ablation_variants_are_valid_configs(dfq: ModuleType) -> None:
    from risloss.training import RISConfig, TrainConfig

    assert set(dfq.ABLATION_SETTINGS) <= set(dfq.ABLATION)
    for name, overrides in dfq.ABLATION.items():
        ris = RISConfig(**overrides)  # raises on a misspelt field or a bad value
        settings = dfq.ABLATION_SETTINGS.get(name, {})
        TrainConfig(task="quantize", ris=ris, **settings)
        assert name == "default" or overrides or settings, name


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_the_public_api(path: Path) -> None:
    """Runners pass their models and data as objects to public functions: no private module
    of the library, no edit of the import path, no module-level attribute factories."""
    source = path.read_text()
    assert not re.search(r"risloss(\.\w+)*\._\w+", source), "a private module of risloss"
    assert "sys.path" not in source
    assert "def __getattr__" not in source


def _committed() -> list[Path]:
    """The compression runs of benchmarks/dfq.py: one folder per profile (``v0.1-``, ``v0.2-``
    for the runs of earlier defaults, kept as the "before" of later changes)."""
    others = {
        "synthesis", "ptq", "exploration", "wrapped", "few_real", "export", "distill",
        "distill-explore", "distill-cli", "distill-900", "distill-cifar10",
        "distill-cifar10-900", "distill-lr005", "distill-cifar10-lr005",
    }  # fmt: skip
    return sorted(
        p
        for p in (BENCH / "results").glob("*/*.json")
        if p.parent.name not in others
        and not p.parent.name.endswith("-wrapped")  # snapshots of wrapped.py's runs
        and not p.parent.name.startswith("wrapped-")  # wrapped.py's runs of other teachers
        and "-wrapped-" not in p.parent.name  # their snapshots
    )


@pytest.mark.parametrize("path", _committed(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_results_have_the_schema(path: Path) -> None:
    record = json.loads(path.read_text())
    assert REQUIRED <= set(record), REQUIRED - set(record)
    # A folder of earlier defaults is named <version>-<profile>, e.g. v0.1-full.
    assert record["profile"] == re.sub(r"^v[0-9.]+-", "", path.parent.name)
    top1 = record["quant_top1"] if record["quant_top1"] is not None else record["student_top1"]
    assert 0.0 <= top1 <= 100.0
    if record["row"] != "fp":
        assert record["config"]["seed"] == record["seed"]
        assert record["config"]["method"] == record["method"]


def _report() -> ModuleType:
    """``docs/scripts/report.py``, which writes the benchmark tables of the docs."""
    return _script("report", ROOT / "docs" / "scripts")


def test_docs_tables_match_the_committed_results() -> None:
    """The generated parts of docs/benchmarks.md and the README are never edited by hand."""
    assert _report().main(["--check"]) == 0, "run python docs/scripts/report.py"


@pytest.mark.slow
def test_one_run_writes_its_json(dfq: ModuleType, tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    config = {
        "iters": 3, "warmup": 1, "batch_size": 8, "eval_limit": 64, "device": "cpu",
        "model": "resnet8_fashion_mnist", "method": "ris", "seed": 0, "w_bits": 4, "a_bits": 4,
        "task": "quantize",
    }  # fmt: skip
    job = {
        "path": str(tmp_path / "quick" / "run.json"), "suite": "quant", "task": "quantize",
        "row": "ris", "method": "ris", "seed": 0, "profile": "quick",
        "model": "resnet8_fashion_mnist", "w_bits": 4, "a_bits": 4, "config": config,
        "ris": {"input_pool": "noise"},
    }  # fmt: skip
    import torch

    threads = torch.get_num_threads()
    try:
        record = dfq._run_one(job)  # sets one thread, as every benchmark run does
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(Path(job["path"]).read_text())
    assert saved == json.loads(json.dumps(record))
    assert REQUIRED <= set(saved)
    assert saved["config"]["ris"]["input_pool"] == "noise"
    assert 0.0 <= saved["quant_top1"] <= 100.0
    assert not list((tmp_path / "quick").glob("*.tmp"))


def test_plan_ablation_carries_trainer_settings(dfq: ModuleType) -> None:
    from risloss.training import RISConfig, TrainConfig

    jobs = _plan(dfq, "suite", "ablation", "variants", ["pool-regime", "alpha-2"])
    by_row = {j["row"]: j for j in jobs if j["seed"] == 0 and j["suite"] == "ablation"}
    pool, alpha = by_row["pool-regime"]["config"], by_row["alpha-2"]["config"]
    for key, value in dfq.ABLATION_SETTINGS["pool-regime"].items():
        assert pool[key] == value
        assert key not in alpha  # the other variants keep the quantization defaults
    cfg = TrainConfig(ris=RISConfig(**by_row["pool-regime"]["ris"]), **pool)
    assert (cfg.task, cfg.student_batch_size, cfg.student_mixup) == ("quantize", 128, 0.5)


def test_plan_extension_variants_run_their_task_with_changes(dfq: ModuleType) -> None:
    import attrs

    from risloss.training import RISConfig, TrainConfig, ris_for

    def config(job: dict) -> TrainConfig:  # as the benchmark builds it
        objective = attrs.evolve(ris_for(job["config"]["task"]), **job["ris"])
        return TrainConfig(ris=objective, **job["config"])

    jobs = _plan(dfq, "suite", "extension", "tasks", ["prune80-paper-weights"])
    assert sorted(Path(j["path"]).name for j in jobs) == [
        f"extension-prune80-paper-weights-ris-fp32-s{s}.json" for s in range(3)
    ]
    cfg = config(jobs[0])
    assert (cfg.task, cfg.sparsity) == ("prune", 0.8)
    assert cfg.ris == RISConfig()  # the paper's weights, the default before
    (pool,) = _plan(dfq, "suite", "extension", "tasks", ["prune80-pool-regime"], "seeds", [0])
    cfg = config(pool)
    assert (cfg.student_steps, cfg.replay_size, cfg.student_batch_size) == (4, 4096, 128)
    assert cfg.ris == ris_for("prune")  # the objective of the prune80 row
    assert (cfg.ris.bns_weight, cfg.ris.feature_diversity_weight) == (10.0, 10.0)
    # the quantization rows: the task's default objective, gdfq without RIS's terms
    quant = {j["row"]: j for j in _plan(dfq, "rows", ["ris", "gdfq"], "seeds", [0], "bits", [3])}
    assert config(quant["ris"]).ris == ris_for("quantize")
    assert config(quant["gdfq"]).method == "gdfq" and quant["gdfq"]["ris"] == {}
    # the committed distillation rows keep the objective they were made with
    (distill,) = _plan(
        dfq, "suite", "extension", "tasks", ["distill"], "rows", ["ris"], "seeds", [0]
    )
    assert config(distill).ris == RISConfig()


def test_report_reads_extension_variants_against_their_task() -> None:
    report = _report()

    def ext(task: str, row: str, top1: float, seed: int) -> dict:
        return {"suite": "extension", "task": task, "row": row, "seed": seed,
                "w_bits": None, "student_top1": top1}  # fmt: skip

    records = [ext("prune80", "ris", v, s) for s, v in enumerate((88.0, 89.0, 90.0))]
    records += [ext("prune80", "gdfq", v, s) for s, v in enumerate((80.0, 81.0, 82.0))]
    records += [ext("prune80-pool-regime", "ris", v, s) for s, v in enumerate((89.0, 88.0))]
    table, findings = report.extension_table(records)
    assert "| prune80-pool-regime |" in table
    (variant,) = [f for f in findings if f.startswith("- prune80 with")]
    assert "`student_steps=4`" in variant
    assert "`prune80-pool-regime` minus `ris` = +0.00 points" in variant
    assert "+1.00, -1.00" in variant and "ahead on 1 of 2 seeds" in variant


def _record(suite: str, row: str, bits: int, top1: float, seed: int = 0) -> dict:
    return {"suite": suite, "row": row, "w_bits": bits, "seed": seed, "quant_top1": top1}


def test_report_ablation_uses_the_ris_row_as_default() -> None:
    report = _report()
    records = [_record("quant", "ris", 3, v, s) for s, v in enumerate((80.0, 82.0, 84.0))]
    records += [_record("ablation", "alpha-2", 3, v, s) for s, v in enumerate((85.0, 86.0))]
    records += [_record("ablation", "draws-2", 3, 81.0)]
    records += [_record("quant", "ris", 4, 90.0)]  # no W4A4 ablation: not a default row
    table, findings = report.ablation_table(records)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {"default", "alpha-2", "draws-2"}
    assert "82.00 ± 2.00 (worst 80.00, n=3)" in rows["default"]
    # means 85.5 vs 82; paired with seeds 0 and 1: (85 - 80 + 86 - 82) / 2 = 4.5
    assert rows["alpha-2"].endswith("| +3.50 | +1.8 | +4.50 | 2 of 2 |")
    assert rows["draws-2"].endswith("| -1.00 | -0.5 | +1.00 | 1 of 1 |")
    assert findings == [
        "- W3A3: default 82.00 ± 2.00 (n=3); best variant `alpha-2` (+3.50 points), worst "
        "`draws-2` (-1.00); 1 of 2 variants lie within one standard deviation of the default; "
        "ahead of the default on every seed (2 or more): `alpha-2`."
    ]


def test_report_quant_table_gaps() -> None:
    report = _report()
    records = [{"suite": "quant", "row": "fp", "w_bits": None, "seed": 0, "quant_top1": 94.0}]
    records += [_record("quant", "gdfq", 3, v, s) for s, v in enumerate((86.0, 88.0))]
    records += [_record("quant", "ris", 3, v, s) for s, v in enumerate((88.0, 90.0))]
    records += [_record("quant", "real", 3, 91.0)]
    table, stats = report.quant_table(records)
    assert stats[("ris", 3)] == (89.0, pytest.approx(2**0.5), 2, 88.0)
    assert stats[("ris", 3)].worst == 88.0
    ris_line = next(line for line in table.splitlines() if line.startswith("| ris |"))
    assert "| -5.00 | -2.00 |" in ris_line
    assert report._findings(records, stats) == [
        "- W3A3: `ris` minus `gdfq` = +2.00 points (per-seed differences +2.00, +2.00; standard "
        "deviation 0.00; ahead on 2 of 2 seeds); share of the `gdfq` to `real` gap closed by "
        "`ris`: +50%."
    ]


def test_report_ablation_compares_with_gdfq_seed_by_seed() -> None:
    report = _report()
    records = [_record("quant", "ris", 3, v, s) for s, v in enumerate((80.0, 84.0))]
    records += [_record("quant", "gdfq", 3, v, s) for s, v in enumerate((81.0, 83.0))]
    records += [_record("ablation", "alpha-2", 3, 83.0, 1)]  # seed 1 only: +0.0 vs gdfq
    records += [_record("ablation", "draws-2", 3, v, s) for s, v in enumerate((83.0, 85.0))]
    _, findings = report.ablation_table(records)
    assert findings[1] == (
        "- W3A3: against `gdfq` run with the same seed, the default is +0.00 points and the best "
        "variant `draws-2` +2.00 (2 seeds); variants 1 point or more ahead of `gdfq`: "
        "`draws-2` (2 seeds)."
    )


def test_report_cifar10_section_drop_and_share(tmp_path: Path) -> None:
    report = _report()
    assert report.cifar10_section(tmp_path) == ("", "")  # nothing before the results land
    config = {"iters": 300, "warmup": 100, "batch_size": 32, "method": "ris"}

    def write(folder: str, name: str, record: dict) -> None:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{name}.json").write_text(json.dumps(record))

    def run(row: str, top1: float, seed: int) -> dict:
        return {
            **_record("quant", row, 3, top1, seed), "config": config, "wall_seconds": 120.0,
            "train_seconds": 60.0, "device": "cpu", "torch_threads": 1,
        }  # fmt: skip

    write("cifar10", "fp", {"suite": "quant", "row": "fp", "w_bits": None, "quant_top1": 92.0})
    for row, values in {
        "ptq-noise": (40.0, 40.0, 40.0),
        "real": (90.0, 90.0, 90.0),
        "ris": (80.0, 82.0, 84.0),
        "gdfq": (70.0, 74.0),  # one seed short
    }.items():
        for seed, v in enumerate(values):
            write("cifar10", f"{row}-s{seed}", run(row, v, seed))
    for seed, v in enumerate((83.0, 81.0)):  # the bare teacher's ris: 80 and 82
        write("wrapped-cifar10", f"fit-ris-s{seed}", {
            "variant": "fit", "method": "ris", "seed": seed, "quant_top1": v,
            "config": {**config, "w_bits": 3},
        })  # fmt: skip
    docs, readme = report.cifar10_section(tmp_path)
    lines = docs.splitlines()
    assert lines[0] == "### CIFAR-10 ResNet-20: the paper's own setting"
    # drop = 92 - mean (92 - worst seed); share = (mean - 40) / (90 - 40)
    assert "| `gdfq` (this project) | 72.00 (n=2) | 20.00 (22.00) | 64% |" in lines
    assert "| `ris` (this project) | 82.00 (n=3) | 10.00 (12.00) | 84% |" in lines
    assert "| GDFQ (published) | 75.11 | 18.78 | — |" in lines  # 93.89 - 75.11
    gdfq = next(line for line in lines if line.startswith("| gdfq | W3A3 |"))
    assert "| 0, 1 (2 of 3) |" in gdfq and gdfq.endswith("| 1.0 | 2.0 | cpu |")
    # 80,000 x 200 images against 300 x 32
    assert "(9,600 images, 1,667 times fewer) on device `cpu`, 1 torch thread per run" in docs
    fit = next(line for line in lines if line.startswith("| `fit_input_statistics=True` |"))
    assert "| 82.00 (81.00, n=2) | 81.00 (n=2) | +1.00 (+3.00, -1.00) |" in fit
    assert "W3A3 `ris` 82.00 (worst 80.00, n=3), `gdfq` 72.00 (worst 70.00, n=2)" in readme
    assert "full precision 92.00" in readme
    assert "#### Ablation on CIFAR-10" not in docs  # no variant ran on this teacher yet
    for seed, v in enumerate((81.0, 81.5)):  # against ris 80 and 82
        write("cifar10", f"abl-s{seed}", {**run("fdiv-1", v, seed), "suite": "ablation"})
    docs = report.cifar10_section(tmp_path)[0]
    assert "): 12 runs, from `benchmarks/results/cifar10/`" in docs  # the quant runs alone
    section = docs.split("#### Ablation on CIFAR-10", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| fdiv-1 |"))
    assert "| +0.25 | 1 of 2 |" in row  # paired: +1.00 and -0.50
    assert "#### Pruning on CIFAR-10" not in docs
    pruned = {"prune80": (60.0, 62.0), "prune80-distill-objective": (63.0, 61.0)}
    for task, values in pruned.items():
        for seed, v in enumerate(values):
            write("cifar10", f"{task}-s{seed}", {
                "suite": "extension", "task": task, "row": "ris", "seed": seed,
                "w_bits": None, "student_top1": v,
            })  # fmt: skip
    docs = report.cifar10_section(tmp_path)[0]
    pruning = docs.split("#### Pruning on CIFAR-10", 1)[1]
    assert "| prune80 | 80% unstructured sparsity | - | 61.00 ± 1.41 (worst 60.00, n=2) |" in (
        pruning
    )
    assert "`prune80-distill-objective` minus `ris` = +1.00 points" in pruning
    assert "): 12 runs, from" in docs  # still the quant runs alone


def test_ptq_docs_table_matches_the_committed_results() -> None:
    """The calibration table of the PTQ guide is printed by the script, never edited by hand."""
    page = (BENCH.parent / "docs" / "guides" / "ptq-calibration.md").read_text()
    start, end = "<!-- ptq-table:start -->\n", "\n<!-- ptq-table:end -->"
    assert start in page and end in page
    shown = page.split(start, 1)[1].split(end, 1)[0]
    assert shown == _script("ptq_calibration").table(), (
        "run python benchmarks/ptq_calibration.py --table"
    )


def test_ptq_fx_table_matches_the_committed_results() -> None:
    """The earlier FX flow's table in the PTQ guide is the script's, from results/ptq/fx."""
    page = (BENCH.parent / "docs" / "guides" / "ptq-calibration.md").read_text()
    start, end = "<!-- ptq-fx-table:start -->\n", "\n<!-- ptq-fx-table:end -->"
    shown = page.split(start, 1)[1].split(end, 1)[0]
    ptq = _script("ptq_calibration")
    assert shown == ptq.table(BENCH / "results" / "ptq" / "fx")
    assert "FX flow" in shown and "PT2E flow" in ptq.table()


def test_ptq_table_summarizes_every_source(tmp_path: Path) -> None:
    ptq = _script("ptq_calibration")
    base = {"model": "m", "fp_top1": 90.0, "num_test_images": 100, "config": {"num_images": 8}}
    for i, (row, top1) in enumerate([("noise", 80.0), ("noise", 82.0), ("real", 89.0)]):
        record = {**base, "row": row, "quant_top1": top1}
        (tmp_path / f"ptq-{row}-w8a8-s{i}.json").write_text(json.dumps(record))
    lines = ptq.table(tmp_path).splitlines()
    assert "| Gaussian noise | 81.00 ± 1.41 | 2 |" in lines
    assert "| synthetic images (data-free) | not run yet | 0 |" in lines
    assert "| real training images | 89.00 ± 0.00 | 1 |" in lines


def test_ptq_records_how_a_synthetic_file_was_made(tmp_path: Path) -> None:
    ptq = _script("ptq_calibration")
    (tmp_path / "synthetic.pt").write_bytes(b"")
    assert ptq._synthesis(str(tmp_path / "synthetic.pt")) is None  # no metrics.json beside it
    config = {"model": "m", "method": "ris", "iters": 300, "batch_size": 32, "seed": 2}
    metrics = {
        "config": {**config, "generator_conditioning": "concat"},
        "num_images": 512,
        "images": {"agreement": 0.75},
        "synthesis": {"g_agree": 0.5},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    summary = ptq._synthesis(str(tmp_path / "synthetic.pt"))
    assert summary == {
        **config,
        "generator_conditioning": "concat",
        "num_images": 512,
        "agreement": 0.75,
        "g_agree": 0.5,
        "train_seconds": None,
    }


@pytest.mark.slow
def test_ptq_benchmark_takes_a_synthetic_file(tmp_path: Path) -> None:
    import torch

    test = fashion_mnist_or_skip("test")
    synthetic = tmp_path / "synthetic.pt"
    torch.save({"images": test.images[:40].clone()}, synthetic)
    ptq = _script("ptq_calibration")
    args = ["--synthetic", str(synthetic), "--sources", "synthetic", "--seeds", "3"]
    args += ["--num-images", "32", "--model", "resnet8_fashion_mnist", "--results", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        assert ptq.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "ptq-synthetic-w8a8-s3.json").read_text())
    assert REQUIRED <= set(record)
    assert (record["row"], record["seed"], record["config"]["num_images"]) == ("synthetic", 3, 32)
    assert record["config"]["calibration_file"] == "synthetic.pt"
    assert 0.0 <= record["quant_top1"] <= 100.0
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(SystemExit):  # a synthetic row needs its file
        ptq.main(["--sources", "synthetic", "--results", str(tmp_path)])


@pytest.mark.parametrize(
    "path",
    sorted((BENCH / "results" / "synthesis").glob("*.json")),
    ids=lambda p: p.name,
)
def test_committed_synthesis_results_have_the_schema(path: Path) -> None:
    record = json.loads(path.read_text())
    assert path.name == f"{record['variant']}-s{record['seed']}.json"
    assert record["final"] == record["curve"][-1] and record["final"]["step"] == record["steps"]
    for point in record["curve"]:
        assert 0.0 <= point["g_agree"] <= 1.0 and point["g_bns"] >= 0.0


def test_synthesis_table_reports_every_variant(tmp_path: Path) -> None:
    report = _report()
    for seed, agree in enumerate((0.5, 1.0)):
        curve = [
            {"step": 50, "g_agree": 0.1, "g_ce": 2.0, "g_bns": 1.0, "g_sim": 0.5},
            {"step": 100, "g_agree": agree, "g_ce": 0.1, "g_bns": 0.2, "g_sim": 0.9},
        ]
        record = {"variant": "concat", "seed": seed, "steps": 100, "curve": curve}
        record["final"] = curve[-1]
        (tmp_path / f"concat-s{seed}.json").write_text(json.dumps(record))
    table = report.synthesis_table(tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| concat |"))
    assert "| 2 | 0.750 | 0.750 (0.500) | 0.100 | 0.200 | 0.900 |" in row


# Fields added to TrainConfig after a committed run was made, with the value that reproduces
# what the run did (the behaviour before the field existed): such a run's configuration lacks
# them, and the script that made it must pin them to these values.
_LATER_FIELDS = {
    "student_batch_size": None,
    "student_mixup": 0.0,
    "student_cutmix": 0.0,
    "generator_output_bound": "clamp",
}
# The same for the fields of the nested generator objective (``ris``).
_LATER_RIS_FIELDS = {"bns_momentum": 0.0}


def _assert_same_config(recorded: dict, expected: dict) -> None:
    """A committed run's configuration against the one its script builds now."""
    expected = dict(expected)
    for name, value in _LATER_FIELDS.items():
        if name not in recorded:
            assert expected.pop(name) == value, name
    if "ris" in recorded and "ris" in expected:
        expected["ris"] = dict(expected["ris"])
        for name, value in _LATER_RIS_FIELDS.items():
            if name not in recorded["ris"]:
                assert expected["ris"].pop(name) == value, f"ris.{name}"
    assert recorded == expected


@pytest.mark.parametrize(
    "path",
    sorted((BENCH / "results" / "exploration").glob("*.json")),
    ids=lambda p: p.name,
)
def test_exploration_results_are_the_runs_the_script_names(path: Path) -> None:
    explore = _script("explore")
    record = json.loads(path.read_text())
    assert record["run"] == path.stem and record["question"] == explore.RUNS[path.stem][0]
    _assert_same_config(record["config"], explore.config_of(path.stem).to_dict())
    assert 0.0 <= record["student_top1"] <= 100.0


@pytest.mark.parametrize(
    "path",
    sorted((BENCH / "results").glob("wrapped*/*.json")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_wrapped_teacher_results_name_their_settings(path: Path) -> None:
    wrapped = _script("wrapped")
    record = json.loads(path.read_text())
    bits = record.get("bits", 4)  # the runs made before --bits existed: W4A4
    tag = f"w{bits}a{bits}"
    assert path.stem == f"{record['variant']}-{record['method']}-{tag}-s{record['seed']}"
    assert path.parent == wrapped.results_folder(record.get("model", wrapped.DEFAULT_MODEL))
    fit = record["config"]["fit_input_statistics"]
    # "plain" runs made before the option had the value "auto" recorded False: the default then
    assert fit == wrapped.VARIANTS[record["variant"]].get("fit_input_statistics", "auto")
    assert record["config"]["normalize"] is None and record["config"]["w_bits"] == bits


@pytest.mark.parametrize(
    "path", sorted((BENCH / "results" / "few_real").glob("*.json")), ids=lambda p: p.name
)
def test_few_real_results_are_the_runs_the_script_names(path: Path) -> None:
    few = _script("few_real")
    record = json.loads(path.read_text())
    assert path.stem == f"real-{record['per_class']}_seed{record['seed']}"
    expected = few.config_of(record["per_class"], record["seed"]).to_dict()
    config = dict(record["config"])
    # runs made before the subset went to train() as an object named it as a data factory
    earlier = f"few_real:few_{record['per_class']}_s{record['seed']}"
    assert config.pop("data") in (expected.pop("data"), earlier)
    _assert_same_config(config, expected)
    assert record["num_test_images"] == 10000 and 0.0 <= record["student_top1"] <= 100.0


def test_few_real_subset_takes_k_images_of_every_class() -> None:
    fashion_mnist_or_skip("train")
    few = _script("few_real")
    subset = few.subset("train", 3, seed=5)
    assert subset.labels.bincount().tolist() == [3] * 10
    again = few.subset("train", 3, seed=5)
    assert torch.equal(again.images, subset.images)  # the seed fixes the draw
    other = few.subset("train", 3, seed=6)
    assert not torch.equal(other.images, subset.images)
    assert len(few.subset("test", 3, seed=5)) == 10000  # the test split is whole


def test_few_real_refuses_a_bad_count() -> None:
    with pytest.raises(SystemExit) as err:
        _script("few_real").main(["--per-class", "0"])
    assert err.value.code == 2


def test_student_steps_cost_writes_the_ratio(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "cost.json"
    try:
        assert (
            _script("student_steps_cost").main(["--iters", "3", "--rounds", "1", "--out", str(out)])
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert set(report["median_cpu_s"]) == {"1", "4"}
    assert report["cpu_ratio"]["1"] == 1.0
    assert report["cpu_ratio"]["4"] == report["median_cpu_s"]["4"] / report["median_cpu_s"]["1"]
    assert all(len(runs) == 1 for runs in report["runs"].values())


def _verify_with(
    dfq: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    committed: list[float],
    rerun: float,
    made_on: dict | None,
) -> int:
    """``--verify`` of seed 0 of a row whose committed seeds score ``committed``, rerun here
    scoring ``rerun`` (``made_on``: the machine seed 0 records)."""
    here = dfq.machine()
    for seed, top1 in enumerate(committed):
        record = {
            "suite": "quant", "task": "quantize", "row": "ris", "method": "ris", "seed": seed,
            "profile": "full", "model": "m", "w_bits": 3, "a_bits": 3, "config": {},
            "quant_top1": top1,
        }  # fmt: skip
        if seed == 0 and made_on is not None:
            record["machine"] = made_on
        (tmp_path / f"quant-quantize-ris-w3a3-s{seed}.json").write_text(json.dumps(record))
    monkeypatch.setattr(dfq, "_run_one", lambda job: {"quant_top1": rerun, "machine": here})
    return int(dfq.verify(tmp_path / "quant-quantize-ris-w3a3-s0.json"))


def test_verify_names_the_machine_and_weighs_a_difference_by_the_spread(
    dfq: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    here = dfq.machine()
    assert set(here) == {"cpu", "cpu_capability", "threads"}
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # The same machine: the same bits, or the code changed.
    assert _verify_with(dfq, tmp_path, monkeypatch, [91.0, 92.0, 93.0], 91.0, here) == 0
    assert "identical (on the same machine)" in capsys.readouterr().out
    assert _verify_with(dfq, tmp_path, monkeypatch, [91.0, 92.0, 93.0], 91.5, here) == 1
    assert "DIFFERENT by +0.50 points (on the same machine" in capsys.readouterr().out
    # Another (or an unrecorded) machine: judged against the spread over seeds (1.00 here).
    assert _verify_with(dfq, tmp_path, monkeypatch, [91.0, 92.0, 93.0], 91.5, None) == 0
    out = capsys.readouterr().out
    assert "made on an unrecorded machine" in out and "spread over seeds is 1.00" in out
    assert _verify_with(dfq, tmp_path, monkeypatch, [91.0, 92.0, 93.0], 94.0, None) == 1


def test_the_peers_budget_profile_keeps_and_continues_its_runs() -> None:
    dfq = _script("dfq")
    args = dfq.main.__globals__["argparse"].Namespace(
        profile="cifar10-peers", rows=None, bits=None, seeds=[0], model=None, device="cuda",
        iters=None, results=str(BENCH / "results"), suite="quant", variants=None, tasks=None,
    )  # fmt: skip
    jobs = dfq.plan(args)
    assert {j["row"] for j in jobs} == {"gdfq", "ris", "real"} and len(jobs) == 6
    for job in jobs:
        assert job["keep_run"] and job["model"] == "resnet20_cifar10"
        cfg = job["config"]
        assert (cfg["iters"], cfg["warmup"], cfg["batch_size"]) == (80_000, 800, 200)
        assert cfg["device"] == "cuda" and cfg["checkpoint_every"] == 1000
        assert Path(job["path"]).parent == BENCH / "results" / "cifar10-peers"


@pytest.mark.data
def test_a_kept_benchmark_run_continues_after_an_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run (the peers' budget) keeps its checkpoint: run again, it continues and ends
    as an uninterrupted run."""
    from risloss.training import TrainingInterrupted
    from tests._resume import sigint_after

    fashion_mnist_or_skip("test")
    dfq = _script("dfq")
    monkeypatch.setattr(dfq, "RUNS", tmp_path / "runs")
    config = {
        "model": "resnet8_fashion_mnist", "method": "gdfq", "seed": 0, "task": "quantize",
        "w_bits": 4, "a_bits": 4, "iters": 6, "warmup": 2, "batch_size": 8, "eval_limit": 64,
        "checkpoint_every": 2, "device": "cpu",
    }  # fmt: skip
    job = {
        "suite": "quant", "task": "quantize", "row": "gdfq", "method": "gdfq", "seed": 0,
        "profile": "cifar10-peers", "model": "resnet8_fashion_mnist", "w_bits": 4, "a_bits": 4,
        "config": config, "ris": {}, "keep_run": True, "path": str(tmp_path / "res" / "r.json"),
    }  # fmt: skip
    threads = torch.get_num_threads()
    try:
        whole = dfq._run_one({**job, "keep_run": False, "path": str(tmp_path / "whole.json")})
        with sigint_after(4), pytest.raises(TrainingInterrupted):
            dfq._run_one(job)
        assert (tmp_path / "runs" / "cifar10-peers" / "r" / "checkpoint.pt").exists()
        assert not (tmp_path / "res" / "r.json").exists()
        again = dfq._run_one(job)
    finally:
        torch.set_num_threads(threads)
    assert again["quant_top1"] == whole["quant_top1"]
    assert (
        json.loads((tmp_path / "res" / "r.json").read_text())["quant_top1"] == again["quant_top1"]
    )


# folder: (its data set, settings over the default); the runs of earlier defaults of `risloss
# distill`, kept as the "before" of later changes: distill-lr005 (student learning rate 0.05,
# before 0.1), distill-900 (900 iterations, 300 warm-up, before 1,500)
_LR005 = {"lr_student": 0.05}
_DISTILL_FOLDERS: dict[str, tuple[str, dict[str, float]]] = {
    "distill": ("fashion-mnist", {}),
    "distill-lr005": ("fashion-mnist", _LR005),
    "distill-900": ("fashion-mnist", {"iters": 900, "warmup": 300, **_LR005}),
    "distill-cifar10": ("cifar10", {}),
    "distill-cifar10-lr005": ("cifar10", _LR005),
    "distill-cifar10-900": ("cifar10", {"iters": 900, "warmup": 300, **_LR005}),
}


@pytest.mark.parametrize(
    "path",
    sorted(p for f in _DISTILL_FOLDERS for p in (BENCH / "results" / f).glob("*.json")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_distill_results_are_the_runs_the_script_names(path: Path) -> None:
    distill = _script("distill")
    record = json.loads(path.read_text())
    assert path.stem == f"{record['row']}_seed{record['seed']}"
    config = dict(record["config"])
    data, settings = _DISTILL_FOLDERS[path.parent.name]
    expected = distill.config_of(record["row"], record["seed"], data=data).to_dict()
    expected.update(settings)
    if record["row"].startswith("real-"):  # the subset goes to train() as an object
        assert config.pop("data") == expected.pop("data")
    _assert_same_config(config, expected)
    assert record["num_test_images"] == 10000 and 0.0 <= record["student_top1"] <= 100.0
    assert all({"iter", "top1", "seconds"} <= set(e) for e in record["evals"])
    assert record["evals"][-1]["top1"] == record["student_top1"]  # the final iteration's


@pytest.mark.parametrize(
    "path", sorted((BENCH / "results" / "distill-explore").glob("*.json")), ids=lambda p: p.name
)
def test_distill_exploration_results_are_the_runs_the_script_names(path: Path) -> None:
    explore = _script("distill_explore")
    record = json.loads(path.read_text())
    assert record["name"] == path.stem and record["question"] == explore.RUNS[path.stem][0]
    _assert_same_config(record["config"], explore.config_of(path.stem).to_dict())


def test_distill_benchmark_writes_a_run_with_its_curve(tmp_path: Path) -> None:
    fashion_mnist_or_skip("test")
    distill = _script("distill")
    record = distill.run_one(("real-1", 0, 1, 3, tmp_path, "fashion-mnist", None))
    written = json.loads((tmp_path / "real-1_seed0.json").read_text())
    assert written["student_top1"] == record["student_top1"]
    assert written["config"]["iters"] == 3 and written["config"]["task"] == "distill"
    assert written["objects"]["train_data"]  # the 10 images went in as an object
    assert [e["iter"] for e in written["evals"]] == [3]
    assert written["evals"][0]["seconds"] > 0


def test_distill_benchmark_keeps_a_short_budget_apart(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        _script("distill").main(["--iters", "3"])
    assert err.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_distill_before_rows_are_the_regime_before_the_pool() -> None:
    from risloss.training import RISConfig

    distill = _script("distill")
    dfq = _script("dfq")
    before = distill.config_of("gdfq-before", 1, data="cifar10")
    assert before.model == "resnet20_cifar10" and before.data == "cifar10"
    assert before.method == "gdfq" and before.task == "distill" and before.seed == 1
    # the settings of the committed extension-suite distillation runs and the objective of
    # quantization, where the default distill has its own
    pinned = dfq.EXTENSION_TASKS["distill"]
    settings = distill.before_settings()
    assert {"iters", "student_steps", "replay_size", "student_mixup"} <= set(settings)
    assert {k: getattr(before, k) for k in settings} == {k: pinned[k] for k in settings}
    assert before.ris == RISConfig() != distill.config_of("gdfq", 1, data="cifar10").ris
    after = distill.config_of("gdfq", 1, data="cifar10")
    assert after.student_batch_size == 128 and after.model == "resnet20_cifar10"


def test_distill_benchmark_draws_real_subsets_from_fashion_mnist_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as err:
        _script("distill").main(["--data", "cifar10", "--rows", "real-10"])
    assert err.value.code == 2
    assert "Fashion-MNIST only" in capsys.readouterr().err


def test_distill_subset_takes_k_images_of_every_class() -> None:
    fashion_mnist_or_skip("train")
    subset = _script("distill").subset(2, seed=1)
    assert subset.labels.bincount().tolist() == [2] * 10


def test_report_distill_section_reads_the_rows(tmp_path: Path) -> None:
    report = _report()
    folder = tmp_path / "distill"
    folder.mkdir()
    config = {
        "iters": 9, "warmup": 3, "student_steps": 4, "student_batch_size": 128, "lr_student": 0.1,
    }  # fmt: skip
    for row, seed, top1 in (
        ("ris", 0, 80.0), ("ris", 1, 78.0), ("gdfq", 0, 79.0), ("gdfq", 1, 79.5),
        ("real-10", 0, 77.0),
    ):  # fmt: skip
        record = {
            "row": row, "seed": seed, "student_top1": top1, "config": config,
            "train_seconds": 120.0, "synthesis": {"g_sim": 0.8, "g_agree": 0.9},
            "evals": [{"iter": 3, "top1": 10.0, "seconds": 30.0},
                      {"iter": 9, "top1": top1, "seconds": 120.0}],
        }  # fmt: skip
        if row == "real-10":
            record["real_batch_similarity"] = 0.91
        (folder / f"{row}_seed{seed}.json").write_text(json.dumps(record))
    docs, readme = report.distill_section(tmp_path)
    assert (
        "| synthesized, `ris` | 79.00 (78.00, n=2) | 80.00, 78.00 | 2.0 | 0.900 | 0.800 |" in docs
    )
    assert "`ris` minus `gdfq`: -0.25 points (per seed +1.00, -1.50; ahead on 1 of 2)" in docs
    assert "`ris` against 10 real images per class: +2.00 points" in docs
    assert "real training batches of 32: 0.910" in docs
    assert "`ris` 79.00 (worst 78.00, n=2)" in readme
    assert "Before:" not in docs and "On CIFAR-10" not in docs
    # the earlier defaults and the CIFAR-10 before-and-after, each in its own table
    for sub in ("distill-lr005", "distill-900", "distill-cifar10", "distill-cifar10-lr005",
                "distill-cifar10-900"):  # fmt: skip
        (tmp_path / sub).mkdir()
    before_config = {
        "iters": 5, "warmup": 1, "student_steps": 1, "student_batch_size": None,
        "lr_student": 0.05,
    }  # fmt: skip
    lr005 = {**config, "lr_student": 0.05}
    for sub, row, top1, cfg in (
        ("distill-lr005", "ris", 75.0, lr005),
        ("distill-900", "ris", 70.0, {**lr005, "iters": 6}),
        ("distill-cifar10", "ris", 40.0, config),
        ("distill-cifar10", "ris-before", 25.5, before_config),
        ("distill-cifar10-lr005", "ris", 38.0, lr005),
        ("distill-cifar10-900", "ris", 35.0, lr005),
    ):  # fmt: skip
        record = json.loads((folder / "ris_seed0.json").read_text())
        record.update(row=row, student_top1=top1, config=cfg)
        (tmp_path / sub / f"{row}_seed0.json").write_text(json.dumps(record))
    docs, _ = report.distill_section(tmp_path)
    assert (
        "Before: the default `risloss distill` of 9 iterations, 3 of them warm-up, 4 student "
        "steps of 128 images per iteration after warm-up, student learning rate 0.05" in docs
    )
    assert "Earlier: the default `risloss distill` of 6 iterations, 3 of them warm-up" in docs
    assert docs.index("Before:") < docs.index("Earlier:")
    assert "| synthesized, `ris` | 75.00 (75.00, n=1) |" in docs
    assert "| synthesized, `ris` | 70.00 (70.00, n=1) |" in docs
    assert "| synthesized, `ris`, regime before the pool | 25.50 (25.50, n=1) |" in docs
    assert "1 student step on the iteration's batch" in docs
    assert (
        "| synthesized, `ris`, 900 iterations (300 warm-up), student learning rate 0.05 | 35.00 "
        "(35.00, n=1) |" in docs
    )
    assert "| synthesized, `ris`, student learning rate 0.05 | 38.00 (38.00, n=1) |" in docs
    assert "`ris` minus `ris-lr005`: +2.00 points" in docs
    assert "`ris` minus `ris-900`: +5.00 points" in docs
    assert report._differs(lr005, config) == "learning rate 0.05"
    assert report._differs({**lr005, "iters": 6}, config) == "6 iterations, learning rate 0.05"
    assert report.distill_plot(
        report.load("distill", tmp_path),
        tmp_path / "curve.png",
        before=report.load("distill-lr005", tmp_path),
    )
    assert report._curve([json.loads((folder / "ris_seed0.json").read_text())]) == [
        (0.5, 10.0),
        (2.0, 80.0),
    ]
