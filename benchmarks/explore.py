"""Single-seed exploratory runs behind the choice of the defaults (see docs/benchmarks.md).

Each run is one ``risloss.training.train`` call with the settings named below (every setting
the defaults have since changed is pinned, so the runs mean the same thing under later
defaults). They are cheaper than the benchmark's suites: one seed, and for distillation 600
iterations evaluated on the first 2,000 test images. A choice they suggest becomes a default only
after the full benchmark has measured it. One JSON file per run under
``benchmarks/results/exploration/``; existing files are skipped.

    python benchmarks/explore.py --jobs 2
    python benchmarks/explore.py --runs q3-gdfq-wu100 d-aug-T4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "exploration"

_Q3 = {"task": "quantize", "w_bits": 3, "a_bits": 3, "student_augmentation": "none"}
_Q4 = {**_Q3, "w_bits": 4, "a_bits": 4}
_D = {
    "task": "distill",
    "method": "gdfq",
    "w_bits": None,
    "a_bits": None,
    "iters": 600,
    "warmup": 100,
    "eval_limit": 2000,
    "kd_temperature": 1.0,
    "student_augmentation": "none",
    "lr_student": 0.05,
}
_PENALTY = {"diversity": "penalty"}
# name: (what it asks, TrainConfig settings, RISConfig settings)
RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "q3-gdfq-wu50": ("warm-up 50 of 300", {**_Q3, "method": "gdfq", "warmup": 50}, _PENALTY),
    "q3-gdfq-wu100": ("warm-up 100 of 300", {**_Q3, "method": "gdfq", "warmup": 100}, _PENALTY),
    "q3-gdfq-wu100-s1": (
        "warm-up 100 of 300, seed 1",
        {**_Q3, "method": "gdfq", "warmup": 100, "seed": 1},
        _PENALTY,
    ),
    "q3-gdfq-wu150": ("warm-up 150 of 300", {**_Q3, "method": "gdfq", "warmup": 150}, _PENALTY),
    "q3-gdfq-wu200": ("warm-up 200 of 300", {**_Q3, "method": "gdfq", "warmup": 200}, _PENALTY),
    "q4-gdfq-wu100": ("warm-up 100, W4A4", {**_Q4, "method": "gdfq", "warmup": 100}, _PENALTY),
    "q3-gdfq-fdiv3": (
        "feature diversity 3, warm-up 50",
        {**_Q3, "method": "gdfq", "warmup": 50},
        {**_PENALTY, "feature_diversity_weight": 3.0},
    ),
    "q3-gdfq-wu100-fdiv3": (
        "feature diversity 3, warm-up 100",
        {**_Q3, "method": "gdfq", "warmup": 100},
        {**_PENALTY, "feature_diversity_weight": 3.0},
    ),
    "q3-gdfq-wu100-aug": (
        "student augmentation, warm-up 100",
        {**_Q3, "method": "gdfq", "warmup": 100, "student_augmentation": "all"},
        _PENALTY,
    ),
    "q3-ris-wu100": (
        "RIS, penalty, warm-up 100",
        {**_Q3, "method": "ris", "warmup": 100},
        _PENALTY,
    ),
    "q3-rissoft-wu100": (
        "RIS, soft labels, warm-up 100",
        {**_Q3, "method": "ris", "warmup": 100},
        {"diversity": "soft"},
    ),
    "d-base": ("distillation as before", _D, _PENALTY),
    "d-fdiv1": ("feature diversity 1", _D, {**_PENALTY, "feature_diversity_weight": 1.0}),
    "d-ris-soft": ("RIS, soft labels", {**_D, "method": "ris"}, {"diversity": "soft"}),
    "d-aug": ("student augmentation", {**_D, "student_augmentation": "all"}, _PENALTY),
    "d-aug-fdiv1": (
        "student augmentation, feature diversity 1",
        {**_D, "student_augmentation": "all"},
        {**_PENALTY, "feature_diversity_weight": 1.0},
    ),
    "d-aug-T4": (
        "student augmentation, temperature 4",
        {**_D, "student_augmentation": "all", "kd_temperature": 4.0},
        {"diversity": "soft"},
    ),
    "d-aug-T4-fdiv1": (
        "student augmentation, temperature 4, feature diversity 1",
        {**_D, "student_augmentation": "all", "kd_temperature": 4.0},
        {"diversity": "soft", "feature_diversity_weight": 1.0},
    ),
    "d-aug-T4-ris": (
        "RIS (soft labels), student augmentation, temperature 4",
        {**_D, "method": "ris", "student_augmentation": "all", "kd_temperature": 4.0},
        {"diversity": "soft"},
    ),
    "d-aug-T4-bns1": (
        "student augmentation, temperature 4, BNS weight 1",
        {**_D, "student_augmentation": "all", "kd_temperature": 4.0},
        {"diversity": "soft", "bns_weight": 1.0},
    ),
    "d-aug-T4-bns10": (
        "student augmentation, temperature 4, BNS weight 10",
        {**_D, "student_augmentation": "all", "kd_temperature": 4.0},
        {"diversity": "soft", "bns_weight": 10.0},
    ),
}
# Images clamped to the pixel range of the teacher's inputs, against the same run unbounded,
# over three seeds (single distillation runs differ by several points from seed to seed).
_DAUG = {**_D, "student_augmentation": "all", "kd_temperature": 4.0}
for _seed in (0, 1, 2):
    _tag = "" if _seed == 0 else f"-s{_seed}"
    if _seed:
        RUNS[f"d-aug-T4{_tag}"] = (
            f"student augmentation, temperature 4, seed {_seed}",
            {**_DAUG, "seed": _seed},
            {"diversity": "soft"},
        )
    RUNS[f"d-aug-T4-range{_tag}"] = (
        f"student augmentation, temperature 4, images in the pixel range, seed {_seed}",
        {**_DAUG, "seed": _seed, "input_range": "auto"},
        {"diversity": "soft"},
    )
# What the student is shown: an adversarial generator term, more student steps per iteration on
# a pool of past batches, and both.
_SOFT = {"diversity": "soft"}
RUNS["d-adv1"] = ("adversarial weight 1", {**_DAUG, "adversarial_weight": 1.0}, _SOFT)
RUNS["d-replay-k4"] = (
    "4 student steps per iteration, 3 of them on a pool of 4,096 past images",
    {**_DAUG, "student_steps": 4, "replay_size": 4096},
    _SOFT,
)
RUNS["d-adv1-replay-k4"] = (
    "adversarial weight 1, 4 student steps per iteration on a pool of 4,096 past images",
    {**_DAUG, "adversarial_weight": 1.0, "student_steps": 4, "replay_size": 4096},
    _SOFT,
)
RUNS["d-adv0.1-replay-k4"] = (
    "adversarial weight 0.1, 4 student steps per iteration on a pool of 4,096 past images",
    {**_DAUG, "adversarial_weight": 0.1, "student_steps": 4, "replay_size": 4096},
    _SOFT,
)
RUNS["d-init-teacher"] = (
    "student started from the teacher's matching layers",
    {**_DAUG, "student_init": "teacher"},
    _SOFT,
)
RUNS["d-init-teacher-real"] = (
    "student started from the teacher's matching layers, real images",
    {**_DAUG, "method": "real", "student_init": "teacher"},
    _SOFT,
)
RUNS["d-real"] = ("real images", {**_DAUG, "method": "real"}, _SOFT)

# The same two levers on quantization at the default budget (W3A3, current defaults).
_Q3RIS = {**_Q3, "method": "ris", "warmup": 100}
RUNS["q3-ris-adv1"] = ("RIS, adversarial weight 1", {**_Q3RIS, "adversarial_weight": 1.0}, _SOFT)
RUNS["q3-ris-replay-k4"] = (
    "RIS, 4 student steps per iteration on a pool of 4,096 past images",
    {**_Q3RIS, "student_steps": 4, "replay_size": 4096},
    _SOFT,
)

for _seed in (1, 2):
    RUNS[f"q3-ris-adv1-s{_seed}"] = (
        f"RIS, adversarial weight 1, seed {_seed}",
        {**_Q3RIS, "adversarial_weight": 1.0, "seed": _seed},
        _SOFT,
    )
    RUNS[f"q3-ris-replay-k4-s{_seed}"] = (
        f"RIS, 4 student steps per iteration on a pool of 4,096 past images, seed {_seed}",
        {**_Q3RIS, "student_steps": 4, "replay_size": 4096, "seed": _seed},
        _SOFT,
    )

# The real-image ceiling with the same student schedule (it gets the extra steps too).
for _seed in (0, 1, 2):
    _tag = "" if _seed == 0 else f"-s{_seed}"
    RUNS[f"q3-real-replay-k4{_tag}"] = (
        f"real images, 4 student steps per iteration on a pool of 4,096 past images, seed {_seed}",
        {**_Q3, "method": "real", "warmup": 100, "student_steps": 4, "replay_size": 4096,
         "seed": _seed},
        _SOFT,
    )  # fmt: skip

RUNS["q4-ris-replay-k4"] = (
    "RIS W4A4, 4 student steps per iteration on a pool of 4,096 past images",
    {**_Q4, "method": "ris", "warmup": 100, "student_steps": 4, "replay_size": 4096},
    _SOFT,
)
for _seed in (0, 1, 2):
    _tag = "" if _seed == 0 else f"-s{_seed}"
    RUNS[f"q3-gdfq-replay-k4{_tag}"] = (
        f"GDFQ, 4 student steps per iteration on a pool of 4,096 past images, seed {_seed}",
        {**_Q3, "method": "gdfq", "warmup": 100, "student_steps": 4, "replay_size": 4096,
         "seed": _seed},
        _SOFT,
    )  # fmt: skip

# The student schedule combined with the two ablation variants ahead on seed 0 (RIS, W3A3).
_K4 = {"student_steps": 4, "replay_size": 4096}
for _seed in (0, 1, 2):
    _tag = "" if _seed == 0 else f"-s{_seed}"
    RUNS[f"q3-ris-replay-k4-kl{_tag}"] = (
        f"RIS, 4 student steps on a pool of 4,096, prediction distance KL, seed {_seed}",
        {**_Q3RIS, **_K4, "seed": _seed},
        {**_SOFT, "prediction_distance": "kl"},
    )
    RUNS[f"q3-ris-replay-k4-geo{_tag}"] = (
        f"RIS, 4 student steps on a pool of 4,096, geometric input pool, seed {_seed}",
        {**_Q3RIS, **_K4, "seed": _seed},
        {**_SOFT, "input_pool": "geometric"},
    )
    RUNS[f"q3-ris-replay-k4-kl-geo{_tag}"] = (
        f"RIS, 4 student steps on a pool of 4,096, prediction KL, geometric pool, seed {_seed}",
        {**_Q3RIS, **_K4, "seed": _seed},
        {**_SOFT, "prediction_distance": "kl", "input_pool": "geometric"},
    )


def config_of(name: str) -> Any:
    from risloss.training import RISConfig, TrainConfig

    _, settings, ris = RUNS[name]
    # Pinned to the values of the defaults the runs were made under, unless a run sets them.
    settings = {
        "student_steps": 1,
        "replay_size": 0,
        "student_batch_size": None,
        "student_mixup": 0.0,
        "adversarial_weight": 0.0,
        "input_range": "none",
        "fit_input_statistics": False,
        **settings,
    }
    ris = {"prediction_distance": "l1", **ris}
    return TrainConfig(ris=RISConfig(**ris), **settings)


def run_one(name: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from risloss.training import train

    config = config_of(name)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        metrics = train(config, out, log=None, progress=False)
    record = record_of(name, metrics)
    record["wall_seconds"] = time.monotonic() - t0
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def record_of(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The committed summary of one run's ``metrics.json``."""
    history = metrics["history"]
    tail = [r["s_kd"] for r in history[-20:] if "s_kd" in r]
    return {
        "run": name,
        "question": RUNS[name][0],
        "student_top1": metrics["student_top1"],
        "num_test_images": metrics.get("num_test_images"),
        "synthesis": metrics.get("synthesis", {}),
        "s_kd_last20": sum(tail) / len(tail) if tail else None,
        "config": metrics["config"],
        "train_seconds": metrics["train_seconds"],
        "torch_version": metrics["torch_version"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    todo = [n for n in args.runs if not (RESULTS / f"{n}.json").exists()]
    print(f"{len(todo)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(run_one, todo):
            print(f"{r['run']}: top-1 {r['student_top1']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
