"""Exploratory distillation runs behind the defaults of `risloss distill` (one seed each).

Each run is the pool regime at a shorter budget (600 iterations, 200 of them warm-up, four
student steps of 128 pool images per iteration, images clamped to the pixel range, the generator
objective of ``ris_for("distill")`` with GDFQ's terms) with one or two choices changed: the
adversarial term, MixUp of the student's images, the within-class feature-diversity weight. The
student is evaluated every 200 iterations on the whole test split. One JSON file per run under
``benchmarks/results/distill-explore/``; existing files are skipped.

    python benchmarks/distill_explore.py --jobs 2
    python benchmarks/distill_explore.py --runs fd10-adv1-mix5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "distill-explore"

_BASE: dict[str, Any] = {
    "task": "distill",
    "method": "gdfq",
    "w_bits": None,
    "a_bits": None,
    "iters": 600,
    "warmup": 200,
    "student_steps": 4,
    "student_batch_size": 128,
    "replay_size": 20_000,
    "input_range": "auto",
    "eval_every": 200,
    "lr_student": 0.05,
}
# name: (what it asks, TrainConfig settings, RISConfig settings over ris_for("distill"))
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "fd10-adv1-mix5": (
        "feature diversity 10, adversarial term 1, MixUp 0.5 (the defaults)",
        {"adversarial_weight": 1.0, "student_mixup": 0.5},
        {"feature_diversity_weight": 10.0},
    ),
    "fd10-adv1": (
        "without MixUp",
        {"adversarial_weight": 1.0, "student_mixup": 0.0},
        {"feature_diversity_weight": 10.0},
    ),
    "fd10-mix5": (
        "without the adversarial term",
        {"adversarial_weight": 0.0, "student_mixup": 0.5},
        {"feature_diversity_weight": 10.0},
    ),
}


# Runs at the budget, objective and student learning rate (0.05) of the 900-iteration default
# `risloss distill` (ris, seed 0, evaluated every 100 iterations), one choice changed; read against
# benchmarks/results/distill-900/ris_seed0.json. ris-iters1500 led to the 1,500-iteration
# default.
DEFAULT_RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "ris-fd20": (
        "within-class feature diversity 20 instead of 10",
        {},
        {"feature_diversity_weight": 20.0},
    ),
    "ris-bns30": (
        "BatchNorm-statistics weight 30 instead of 10",
        {},
        {"bns_weight": 30.0},
    ),
    "ris-iters1500": (
        "1,500 iterations instead of 900 (the same 300 of warm-up)",
        {"iters": 1500, "warmup": 300},
        {},
    ),
    "ris-t8": (
        "distillation temperature 8 instead of 4",
        {"kd_temperature": 8.0},
        {},
    ),
    "ris-lr01": (
        "student learning rate 0.1 instead of 0.05",
        {"lr_student": 0.1},
        {},
    ),
}
RUNS.update(DEFAULT_RUNS)

# Runs at the 1,500-iteration default `risloss distill` (ris, seed 0, student learning rate 0.1,
# evaluated every 100 iterations), one choice changed; read against the run "default" (the same
# settings on the same CPU) and benchmarks/results/distill/ris_seed0.json. Resumable: each keeps its run folder under
# benchmarks/runs/distill-explore/ until its JSON is written.
POOL_RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": (
        "the default itself, on the CPU of the runs beside it (a run is bitwise reproducible "
        "only on the same CPU kernels)",
        {},
        {},
    ),
    "pool-all": (
        "a pool that keeps every image synthesized after warm-up (38,400) instead of the last "
        "20,000",
        {"replay_size": 38_400, "replay_memory_mb": 120.0},
        {},
    ),
    "cutmix5": (
        "CutMix with probability 0.5 after MixUp (new)",
        {"student_cutmix": 0.5},
        {},
    ),
    "bnsmom9": (
        "BatchNorm statistics matched with momentum 0.9 across batches (new)",
        {},
        {"bns_momentum": 0.9},
    ),
    "tanh-bound": (
        "the generator's images squashed into the pixel range by a tanh instead of clamped (new)",
        {"generator_output_bound": "tanh"},
        {},
    ),
    "tanh-bound-s1": (
        "the tanh bound, seed 1 (read against the committed ris seed 1)",
        {"generator_output_bound": "tanh", "seed": 1},
        {},
    ),
    "iters2250": (
        "2,250 iterations instead of 1,500 (the same 300 of warm-up): half as much time again",
        {"iters": 2250, "warmup": 300},
        {},
    ),
    "adv3": (
        "adversarial weight 3 instead of 1",
        {"adversarial_weight": 3.0},
        {},
    ),
}
RUNS.update(POOL_RUNS)
RUNS_DIR = Path(__file__).resolve().parent / "runs" / "distill-explore"


def config_of(name: str) -> Any:
    import attrs

    from risloss.training import TrainConfig, ris_for

    _, settings, ris = RUNS[name]
    objective = attrs.evolve(ris_for("distill"), **ris)
    if name in DEFAULT_RUNS:
        base: dict[str, Any] = {"task": "distill", "method": "ris", "seed": 0}
        # lr_student: the default the runs were made under
        base.update(
            w_bits=None, a_bits=None, eval_every=100, iters=900, warmup=300, lr_student=0.05
        )
        return TrainConfig(ris=objective, **{**base, **settings})
    if name in POOL_RUNS:
        base = {"task": "distill", "method": "ris", "seed": 0, "w_bits": None, "a_bits": None}
        base["eval_every"] = 100
        return TrainConfig(ris=objective, **{**base, **settings})
    return TrainConfig(ris=objective, **{**_BASE, **settings})


def record_of(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """What a run's JSON keeps of its ``metrics.json`` (the history left out)."""
    keep = ("config", "fp_top1", "student_top1", "evals", "synthesis", "train_seconds")
    return {
        "name": name,
        "question": RUNS[name][0],
        **{k: metrics[k] for k in keep},
        "torch_version": metrics["torch_version"],
        "machine": metrics["machine"],
        "torch_threads": 1,
    }


def run_one(name: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    from risloss.training import train

    if name in POOL_RUNS:  # resumable: the run folder stays until the JSON is written
        out = RUNS_DIR / name
        resume = (out / "checkpoint.pt").exists()
        metrics = train(config_of(name), out, log=None, progress=False, resume=resume)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = train(config_of(name), tmp, log=None, progress=False)
    record = record_of(name, metrics)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    todo = [n for n in args.runs if not (RESULTS / f"{n}.json").exists()]
    print(f"{len(todo)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(run_one, todo):
            print(f"{r['name']}: top-1 {r['student_top1']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
