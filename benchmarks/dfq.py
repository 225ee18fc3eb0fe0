"""Data-free quantization benchmark: every row of BENCHMARK.md, side by side, over seeds.

Each run writes one JSON file under ``benchmarks/results/<profile>/``; runs whose file exists are
skipped, so an interrupted benchmark resumes where it stopped. Every run uses one torch thread,
so that rerunning it on the CPU with the same seed reproduces its accuracy exactly; ``--jobs``
runs several at once.

    python benchmarks/dfq.py --profile quick            # smoke run, minutes on 2 cores
    python benchmarks/dfq.py --profile full --jobs 2    # the committed figures (hours)
    python benchmarks/dfq.py --profile full --rows ris gdfq --bits 3 --seeds 0
    python benchmarks/dfq.py --suite ablation           # the choices METHOD.md leaves open
    python benchmarks/dfq.py --profile cifar10 --jobs 2  # the paper's setting: CIFAR-10 ResNet-20
    python benchmarks/dfq.py --profile cifar10-peers --device cuda   # the peers' budget, on a GPU
    python docs/scripts/report.py                       # tables and plot into the docs

Rows (quantization suite): fp, ptq-noise, noise, gdfq, ris, ris-no-input, ris-no-weight,
ris-no-div, ris-no-rob, real. Extension suite: distillation ResNet-20 -> ResNet-8 and pruning at
50% and 80% sparsity, each with ris, gdfq, noise and real.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

PROFILES: dict[str, dict[str, Any]] = {
    # A smoke run of the whole protocol: tiny budgets, a subset of the test split.
    "quick": {"iters": 24, "warmup": 8, "batch_size": 32, "eval_limit": 1000},
    # The committed figures: the budget of the default `risloss quantize`.
    "full": {"iters": 300, "warmup": 100, "batch_size": 32, "eval_limit": None},
    # Four times the budget, with a longer generator warm-up: where do the methods separate?
    # Only the rows and the bit width that the question needs.
    "long": {
        "iters": 1200,
        "warmup": 200,
        "batch_size": 32,
        "eval_limit": None,
        "rows": ("gdfq", "ris", "real"),
        "bits": (3,),
    },
    # The paper's own setting: the shipped CIFAR-10 ResNet-20 (trained on the JPEG copy of
    # CIFAR-10, see docs/benchmarks.md) at the default `risloss quantize` budget. The images are
    # read from RISLOSS_CIFAR10 (or data/cifar10): train/<class>/ and test/<class>/ folders.
    "cifar10": {
        "iters": 300,
        "warmup": 100,
        "batch_size": 32,
        "eval_limit": None,
        "model": "resnet20_cifar10",
        "rows": ("fp", "ptq-noise", "gdfq", "ris", "real"),
    },
    # Four times the budget at W3A3, where the methods separate.
    "cifar10-long": {
        "iters": 1200,
        "warmup": 200,
        "batch_size": 32,
        "eval_limit": None,
        "model": "resnet20_cifar10",
        "rows": ("gdfq", "ris", "real"),
        "bits": (3,),
    },
    # The peers' budget for this setting (GDFQ's CIFAR configuration, which Qimera, IntraQ, AdaSG
    # and AdaDFQ keep): 400 epochs of 200 iterations (80,000) at batch 200, the first 4 epochs
    # (800 iterations) for the generator alone. Hours on a GPU: each run keeps its checkpoint
    # under benchmarks/runs/ and continues from it when the command is run again.
    "cifar10-peers": {
        "iters": 80_000,
        "warmup": 800,
        "batch_size": 200,
        "eval_limit": None,
        "checkpoint_every": 1000,
        "model": "resnet20_cifar10",
        "rows": ("gdfq", "ris", "real"),
        "keep_runs": True,
    },
}
DEFAULT_MODEL = "resnet20_fashion_mnist"
RUNS = Path(__file__).resolve().parent / "runs"
DEFAULT_BITS = {"quant": (4, 3), "ablation": (3,), "extension": ()}

# Quantization rows: (method, overrides of RISConfig); "fp" and "ptq-noise" are special.
QUANT_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "ptq-noise": ("noise", {}),
    "noise": ("noise", {}),
    "gdfq": ("gdfq", {}),
    "ris": ("ris", {}),
    "ris-no-input": ("ris", {"input_perturbation": False}),
    "ris-no-weight": ("ris", {"weight_perturbation": False}),
    "ris-no-div": ("ris", {"diversity": "none"}),
    # the robustness term off, soft labels kept: how much of RIS's margin is its diversity alone
    "ris-no-rob": ("ris", {"robustness_weight": 0.0}),
    "real": ("real", {}),
}
ALL_QUANT_ROWS = ("fp", *QUANT_ROWS)

# Ablation of the open choices (all at W4A4 unless --bits says otherwise), relative to `ris`.
# "default" is the `ris` row of the quantization suite and reuses its runs.
ABLATION: dict[str, dict[str, Any]] = {
    "default": {},
    # loss weights alpha (robustness) and gamma (diversity)
    "alpha-0.5": {"robustness_weight": 0.5},
    "alpha-2": {"robustness_weight": 2.0},
    "gamma-0.5": {"diversity": "penalty", "diversity_weight": 0.5},
    # weight-noise scale and mode
    "wnoise-eps0.02": {"weight_noise_eps": 0.02},
    "wnoise-eps0.1": {"weight_noise_eps": 0.1},
    # perturbation pool
    "pool-noise": {"input_pool": "noise"},
    "pool-geometric": {"input_pool": "geometric"},
    # combination mode and number of draws
    "mode-joint": {"mode": "joint"},
    "draws-2": {"num_draws": 2},
    # the other diversity reading: the correlation penalty instead of soft labels
    "diversity-penalty": {"diversity": "penalty"},
    # feature and prediction distances
    "feature-mse": {"feature_distance": "mse"},
    "prediction-l1": {"prediction_distance": "l1"},
    "wnoise-filter": {"weight_noise_mode": "filter"},
    "wnoise-absolute": {"weight_noise_mode": "absolute", "weight_noise_eps": 0.01},
    # the student's own rounding error at 3 bits (the ablation runs at W3A3) as the weight noise
    "wnoise-quant": {"weight_noise_mode": "quant", "weight_noise_bits": 3},
    "threshold-0.05": {"threshold": 0.05},
    "pool-photometric": {"input_pool": "photometric"},
    "prediction-js": {"prediction_distance": "js"},
    "diversity-both": {"diversity": "both"},
    "pairs-same": {"diversity": "penalty", "correlation_pairs": "same"},
    # within-class feature diversity (pushes a class's images apart in the teacher's features)
    "fdiv-1": {"feature_diversity_weight": 1.0},
    # the paper's weights (BNS 0.1 as GDFQ's, no within-class feature diversity): the default
    # objective before the tasks took distillation's (risloss.training.ris_for)
    "paper-weights": {"bns_weight": 0.1, "feature_diversity_weight": 0.0},
    # the student side of `risloss distill`'s pool regime (every student step on 128 images of
    # the whole pool, augmented, half of them mixed): does it help a quantized copy too?
    "pool-regime": {},
}
# Trainer settings of an ablation variant (beside its objective settings above).
ABLATION_SETTINGS: dict[str, dict[str, Any]] = {
    "pool-regime": {
        "student_batch_size": 128,
        "student_augmentation": "all",
        "student_mixup": 0.5,
    },
}

EXTENSION_ROWS = ("ris", "gdfq", "noise", "real")
EXTENSION_TASKS: dict[str, dict[str, Any]] = {
    # A fresh ResNet-8 learns from the images alone: 250 student steps of 32 images leave even
    # real data at ~37% (measured, seed 0), so distillation gets the long profile's budget.
    # Pinned to the regime its committed runs were made in (one student step per iteration on
    # the iteration's batch, no pool, no MixUp, unbounded images); the default `distill` since
    # then is measured by benchmarks/distill.py.
    "distill": {
        "task": "distill",
        "student": "resnet8",
        "w_bits": None,
        "a_bits": None,
        "iters": 1200,
        "warmup": 200,
        "student_steps": 1,
        "student_batch_size": None,
        "replay_size": 0,
        "student_mixup": 0.0,
        "adversarial_weight": 0.0,
        "input_range": "none",
        "lr_student": 0.05,
    },
    "prune50": {"task": "prune", "sparsity": 0.5, "w_bits": None, "a_bits": None},
    "prune80": {"task": "prune", "sparsity": 0.8, "w_bits": None, "a_bits": None},
}
# Objective settings of an extension task over its task's default (risloss.training.ris_for):
# distillation's committed runs were made with the paper's weights.
EXTENSION_OBJECTIVES: dict[str, dict[str, Any]] = {"distill": dict(ABLATION["paper-weights"])}
# Variants of an extension task, read against its `ris` row seed by seed: (the task, its rows,
# trainer settings over the task's, objective settings over the task's default).
EXTENSION_VARIANTS: dict[str, tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]] = {
    "prune80-paper-weights": ("prune80", ("ris",), {}, dict(ABLATION["paper-weights"])),
    "prune80-pool-regime": (
        "prune80",
        ("ris",),
        {"student_steps": 4, "replay_size": 4096, **ABLATION_SETTINGS["pool-regime"]},
        {},
    ),
}


def machine() -> dict[str, Any]:
    """Where a result is made (CPU model, kernel level, threads; see ``metrics["machine"]``)."""
    from risloss.training import machine_info

    return machine_info()


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process (one torch thread) and write its JSON."""
    import torch

    torch.set_num_threads(1)
    import attrs

    from risloss import evaluate
    from risloss.data import load_dataset
    from risloss.models import load_pretrained, pretrained_info
    from risloss.training import TrainConfig, ris_for, train

    path = Path(job["path"])
    t0 = time.monotonic()
    record: dict[str, Any] = {
        k: job[k] for k in ("suite", "task", "row", "method", "seed", "profile")
    }
    record.update(w_bits=job["w_bits"], a_bits=job["a_bits"], model=job["model"])
    dataset = pretrained_info(job["model"])["dataset"]
    if job["row"] == "fp":
        teacher = load_pretrained(job["model"])
        top1 = evaluate(teacher, load_dataset(dataset, "test"))
        record.update(fp_top1=top1, quant_top1=top1, student_top1=top1)
    elif job["row"] == "no-recovery":  # the pruned copy as it is, before any training
        from risloss.pruning import prune_model

        teacher = load_pretrained(job["model"])
        test = load_dataset(dataset, "test")
        pruned = prune_model(teacher, sparsity=job["config"]["sparsity"])
        top1 = evaluate(pruned, test)
        record.update(
            fp_top1=evaluate(teacher, test),
            quant_top1=None,
            student_top1=top1,
            config=job["config"],
        )
    else:
        # the objective: the task's default (ris_for) with the row's settings over it
        objective = attrs.evolve(ris_for(job["config"]["task"]), **job["ris"])
        cfg = TrainConfig(ris=objective, **job["config"])
        if job.get("keep_run"):  # a long run: its checkpoint outlives an interruption
            out = RUNS / job["profile"] / path.stem
            out.mkdir(parents=True, exist_ok=True)
            resume = (out / "checkpoint.pt").exists()
            metrics = train(cfg, out, log=None, progress=False, resume=resume)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                metrics = train(cfg, tmp, log=None, progress=False)
        record.update(
            fp_top1=metrics["fp_top1"],
            student_top1=metrics["student_top1"],
            quant_top1=metrics.get("quant_top1"),
            train_seconds=metrics["train_seconds"],
            config=metrics["config"],
            final_losses=metrics["history"][-1],
            synthesis=metrics.get("synthesis", {}),
        )
        for key in ("prune", "student_params"):
            if key in metrics:
                record[key] = metrics[key]
    special = job["row"] in ("fp", "no-recovery")
    record.update(
        wall_seconds=time.monotonic() - t0,
        torch_version=torch.__version__,
        torch_threads=1,
        machine=machine(),
        device="cpu" if special else job["config"].get("device", "cpu"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run the arguments ask for, as job dicts (including those already done)."""
    profile = dict(PROFILES[args.profile])
    profile_rows = profile.pop("rows", ALL_QUANT_ROWS)  # not a training setting
    rows = args.rows or list(profile_rows)
    profile_bits = profile.pop("bits", None)
    keep_run = profile.pop("keep_runs", False)
    model = args.model or profile.pop("model", DEFAULT_MODEL)
    profile.pop("model", None)
    if args.iters is not None:
        profile["iters"] = args.iters
    base = {**profile, "model": model, "device": args.device}
    jobs: list[dict[str, Any]] = []
    folder = Path(args.results) / args.profile

    def add(suite: str, task: str, row: str, method: str, seed: int, bits: int | None,
            config: dict[str, Any], ris: dict[str, Any]) -> None:  # fmt: skip
        wb = config.get("w_bits", bits)
        tag = f"w{wb}a{wb}" if wb is not None else "fp32"
        name = "quant-fp.json" if row == "fp" else f"{suite}-{task}-{row}-{tag}-s{seed}.json"
        cfg = {**base, "method": method, "seed": seed, "w_bits": bits, "a_bits": bits, **config}
        jobs.append(
            {
                "path": str(folder / name),
                "suite": suite,
                "task": task,
                "row": row,
                "method": method,
                "seed": seed,
                "profile": args.profile,
                "model": model,
                "keep_run": keep_run,
                "w_bits": cfg["w_bits"],
                "a_bits": cfg["a_bits"],
                "config": cfg,
                "ris": ris,
            }
        )

    suites = ("quant", "extension", "ablation") if args.suite == "all" else (args.suite,)
    for suite in suites:
        bit_widths = args.bits or list(profile_bits or DEFAULT_BITS[suite])
        for seed in args.seeds:
            _plan_suite(suite, seed, bit_widths, rows, profile, args, add)
    unique = {j["path"]: j for j in jobs}  # the ablation's default is the quant suite's `ris`
    return list(unique.values())


def _plan_suite(suite: str, seed: int, bit_widths: list[int], rows: list[str],
                profile: dict[str, Any], args: argparse.Namespace, add: Any) -> None:  # fmt: skip
    """Add the runs of one suite and one seed."""
    quantize = {"task": "quantize"}
    if suite == "extension":
        for task_name, extra in EXTENSION_TASKS.items():
            if args.tasks and task_name not in args.tasks:
                continue
            for row in EXTENSION_ROWS:
                if args.rows and row not in args.rows:
                    continue
                objective = dict(EXTENSION_OBJECTIVES.get(task_name, {}))
                add("extension", task_name, row, row, seed, None, dict(extra), objective)
            if extra["task"] == "prune" and seed == args.seeds[0]:  # deterministic: one run,
                # at seed 0 whichever seeds are asked for (a run of seed 1 alone reuses it)
                add("extension", task_name, "no-recovery", "none", 0, None, dict(extra), {})
        for name, (of, variant_rows, settings, ris) in EXTENSION_VARIANTS.items():
            if not args.tasks or name in args.tasks:
                for row in variant_rows:
                    if not args.rows or row in args.rows:
                        extra = {**EXTENSION_TASKS[of], **settings}
                        add("extension", name, row, row, seed, None, extra, dict(ris))
        return
    for bits in bit_widths:
        if suite == "ablation":
            for name in args.variants or ABLATION:
                if name == "default":  # identical to the quantization suite's `ris` row
                    add("quant", "quantize", "ris", "ris", seed, bits, quantize, {})
                else:
                    settings = {**quantize, **ABLATION_SETTINGS.get(name, {})}
                    add("ablation", "quantize", name, "ris", seed, bits, settings, ABLATION[name])
            continue
        for row in rows:
            if row == "fp":
                if bits == bit_widths[0] and seed == args.seeds[0]:
                    add("quant", "quantize", "fp", "none", seed, None, {}, {})
                continue
            method, ris = QUANT_ROWS[row]
            extra = dict(quantize)
            if row == "ptq-noise":
                extra.update(iters=profile["warmup"], warmup=profile["warmup"])
            add("quant", "quantize", row, method, seed, bits, extra, ris)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--quick", action="store_true", help="the same as --profile quick")
    p.add_argument(
        "--suite",
        choices=["quant", "ablation", "extension", "all"],
        default="quant",
        help="quant (every row), ablation (open choices), extension (distill, prune) or all",
    )
    p.add_argument(
        "--rows", nargs="+", choices=ALL_QUANT_ROWS, default=None, help="default: the profile's"
    )
    p.add_argument("--variants", nargs="+", choices=sorted(ABLATION), default=None)
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=sorted([*EXTENSION_TASKS, *EXTENSION_VARIANTS]),
        default=None,
        help="extension suite: only these tasks (default: all; --rows selects its rows)",
    )
    p.add_argument(
        "--bits",
        nargs="+",
        type=int,
        choices=range(2, 9),
        default=None,
        help="default: 4 3 for the quant suite, 3 for the ablation (the long profile: 3)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--model",
        default=None,
        help=f"the shipped teacher (default: the profile's, else {DEFAULT_MODEL})",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--iters", type=int, default=None, help="override the profile's iterations")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one thread)")
    p.add_argument(
        "--results",
        default=str(RESULTS),
        help="folder of the JSON results, one subfolder per profile (default: benchmarks/results)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    p.add_argument(
        "--verify",
        metavar="RESULT_JSON",
        default=None,
        help="rerun the run behind one committed result file and check its accuracy is identical",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.profile = "quick"
    if args.verify:
        return verify(Path(args.verify))
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    jobs = plan(args)
    todo = [j for j in jobs if not Path(j["path"]).exists()]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done, {len(todo)} to run", flush=True)
    if args.dry_run:
        for j in todo:
            print(" ", Path(j["path"]).name)
        return 0
    if args.jobs == 1:
        results = map(_run_one, todo)
        for r in results:
            _print(r)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for r in pool.map(_run_one, todo):
                _print(r)
    return 0


def verify(path: Path) -> int:
    """Rerun the configuration recorded in ``path`` and compare the accuracy exactly.

    The file alone says what to run: its ``config`` holds every setting (results made before a
    setting existed record the value that version used; a setting missing from the file takes
    today's default).
    """
    saved = json.loads(path.read_text())
    if saved["row"] == "fp":
        config: dict[str, Any] = {}
        ris: dict[str, Any] = {}
    else:
        config = dict(saved["config"])
        ris = config.pop("ris", {})
    with tempfile.TemporaryDirectory() as tmp:
        job = {k: saved[k] for k in ("suite", "task", "row", "method", "seed", "profile")}
        job.update(
            path=str(Path(tmp) / path.name),
            model=saved["model"],
            w_bits=saved["w_bits"],
            a_bits=saved["a_bits"],
            config=config,
            ris=ris,
        )
        again = _run_one(job)
    key = "quant_top1" if saved.get("quant_top1") is not None else "student_top1"
    same = again[key] == saved[key]
    here, there = again["machine"], saved.get("machine")
    if there == here:
        where = "on the same machine"
    else:
        where = f"made on {_machine_text(there)}, rerun on {_machine_text(here)}"
    if same:
        print(f"{path.name}: committed {saved[key]!r}, rerun {again[key]!r}: identical ({where})")
        return 0
    diff = again[key] - saved[key]
    spread = _seed_spread(path, key)
    scale = f"the row's spread over seeds is {spread:.2f}" if spread is not None else "one seed"
    print(
        f"{path.name}: committed {saved[key]!r}, rerun {again[key]!r}: DIFFERENT by {diff:+.2f} "
        f"points ({where}; {scale})"
    )
    if there == here:
        return 1  # the same kernels give the same bits: the code or the data changed
    return 0 if spread is not None and abs(diff) <= 2 * spread else 1


def _machine_text(m: dict[str, Any] | None) -> str:
    if not m:
        return "an unrecorded machine"
    return f"{m['cpu']} ({m['cpu_capability']}, {m['threads']} thread(s))"


def _seed_spread(path: Path, key: str) -> float | None:
    """Standard deviation over the committed seeds of the row of ``path`` (None: one seed)."""
    stem = path.name.rsplit("-s", 1)[0]
    values = []
    for other in sorted(path.parent.glob(f"{stem}-s*.json")):
        if other.name.rsplit("-s", 1)[0] == stem:
            value = json.loads(other.read_text()).get(key)
            if value is not None:
                values.append(float(value))
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _print(r: dict[str, Any]) -> None:
    top1 = r.get("quant_top1") if r.get("quant_top1") is not None else r["student_top1"]
    print(
        f"{r['suite']}/{r['task']}/{r['row']} w{r['w_bits']}a{r['a_bits']} seed {r['seed']}: "
        f"top-1 {top1:.2f}% ({r['wall_seconds']:.0f}s)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
