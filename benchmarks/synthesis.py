"""How fast does the generator learn the teacher's classes? Generator-only runs, over seeds.

Each run trains a conditional generator against the shipped teacher for ``--steps`` steps with
the GDFQ objective (CE + 0.1 BNS) or RIS's, and records the synthesis figures every
``--every`` steps (means over the last ``--every`` steps): the teacher's agreement with the
requested labels (``g_agree``), its cross-entropy (``g_ce``), the BNS loss (``g_bns``) and the
within-class feature similarity (``g_sim``). Variants change one choice of the generator or of
its optimization; ``wrapped`` variants use the teacher wrapped so that it takes [0, 1] images
and normalizes them itself. One JSON file per run under ``benchmarks/results/synthesis/``;
existing files are skipped (resumable); one torch thread per run.

    python benchmarks/synthesis.py --jobs 2                 # every variant, seeds 0 1 2
    python benchmarks/synthesis.py --variants concat multiply --seeds 0
    python docs/scripts/report.py                           # tables into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "synthesis"

# Each variant overrides DEFAULTS: the objective, the teacher, Generator keyword arguments, the
# Adam learning rate and the output statistics' learning-rate multiple ("generator" holds
# keyword arguments of the trainer's generator source, set through TrainConfig's fields).
_GDFQ = {"conditioning": "multiply"}
VARIANTS: dict[str, dict[str, Any]] = {
    # GDFQ's generator as published (the earlier default): the label embedding multiplies the
    # noise, and the images keep the zero-mean, unit-variance statistics (output affine frozen).
    "multiply": {"generator": _GDFQ, "output_lr": 0.0},
    "multiply-lr3e-3": {"generator": _GDFQ, "output_lr": 0.0, "lr": 3e-3},
    "multiply-ris": {"generator": _GDFQ, "output_lr": 0.0, "objective": "ris"},
    # The label embedding concatenated to the noise: the class is linearly visible to fc.
    "concat-frozen": {"output_lr": 0.0},
    # ... and the learnable output statistics at 10x the learning rate (the new default).
    "concat": {},
    "concat-ris": {"objective": "ris"},
    # Against within-class collapse: a heavier BNS weight, soft labels (RIS's other diversity).
    "concat-bns1": {"bns_weight": 1.0},
    "concat-bns10": {"bns_weight": 10.0},
    "concat-ris-soft": {"objective": "ris", "diversity": "soft"},
    # ... and the within-class feature-diversity term (both objectives).
    "concat-fdiv1": {"feature_diversity_weight": 1.0},
    "concat-fdiv3": {"feature_diversity_weight": 3.0},
    "concat-ris-soft-fdiv1": {
        "objective": "ris",
        "diversity": "soft",
        "feature_diversity_weight": 1.0,
    },
    # A teacher that takes [0, 1] images and normalizes them itself.
    "wrapped-multiply": {"generator": _GDFQ, "output_lr": 0.0, "teacher": "wrapped"},
    "wrapped-concat-frozen": {"output_lr": 0.0, "teacher": "wrapped"},
    "wrapped-concat-outlr1": {"output_lr": 1.0, "teacher": "wrapped"},
    "wrapped-concat": {"teacher": "wrapped"},
    # ... starting from the input statistics fitted to the teacher's first BatchNorm layer.
    "wrapped-concat-fit": {"teacher": "wrapped", "generator": {"fit_input_statistics": True}},
}
DEFAULTS: dict[str, Any] = {
    "generator": {},
    "objective": "gdfq",
    "bns_weight": 0.1,
    "diversity": "penalty",
    "feature_diversity_weight": 0.0,
    "teacher": "bare",
    "lr": 1e-3,
    "output_lr": 10.0,
    "batch_size": 32,
}


def _sibling(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, loaded from its file (its folder need not be importable)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Keyword arguments of the trainer's generator source ("generator" above) as TrainConfig fields.
_GENERATOR_FIELDS = {
    "conditioning": "generator_conditioning",
    "fit_input_statistics": "fit_input_statistics",
}


def config_of(variant: str, seed: int, steps: int) -> Any:
    """The variant as a generator-only run: ``steps`` generator steps, no warm-up."""
    from risloss.training import RISConfig, TrainConfig

    v = {**DEFAULTS, **VARIANTS[variant]}
    return TrainConfig(
        method=v["objective"],
        ris=RISConfig(
            bns_weight=v["bns_weight"],
            diversity=v["diversity"],
            feature_diversity_weight=v["feature_diversity_weight"],
        ),
        iters=steps,
        warmup=0,
        batch_size=v["batch_size"],
        lr_generator=v["lr"],
        generator_output_lr_scale=v["output_lr"],
        seed=seed,
        checkpoint_every=steps,
        # the wrapped teacher takes [0, 1] images: the test images (read for their shape) too
        normalize=None if v["teacher"] == "wrapped" else "default",
        # Started standardized unless a variant says otherwise, as every committed run did
        # (before fit_input_statistics="auto" became the default).
        **{"fit_input_statistics": False}
        | {_GENERATOR_FIELDS[k]: value for k, value in v["generator"].items()},
    )


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from risloss.training import machine_info, synthesize

    v = {**DEFAULTS, **VARIANTS[job["variant"]]}
    # the teacher of benchmarks/wrapped.py takes [0, 1] images; "bare" is the shipped teacher
    teacher = _sibling("wrapped").pretrained() if v["teacher"] == "wrapped" else None
    config = config_of(job["variant"], job["seed"], job["steps"])
    with tempfile.TemporaryDirectory() as out:
        # the trainer's own generator, objective and seeding, without a student
        metrics = synthesize(config, out, num_images=1, model=teacher, log=None, progress=False)
    history = [{k: x for k, x in r.items() if k != "iter"} for r in metrics["history"]]
    every = job["every"]
    window: list[dict[str, float]] = []
    curve = []
    for step, parts in enumerate(history, start=1):
        window.append(parts)
        if step % every == 0:
            keys = window[-1].keys()
            curve.append(
                {"step": step, **{k: sum(w[k] for w in window) / len(window) for k in keys}}
            )
            window = []
    record = {
        "variant": job["variant"],
        "seed": job["seed"],
        "steps": job["steps"],
        "settings": v,
        "curve": curve,
        "final": curve[-1],
        "seconds": metrics["train_seconds"],
        "torch_version": torch.__version__,
        "machine": machine_info(),
    }
    path = Path(job["path"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    jobs = []
    for variant in args.variants:
        for seed in args.seeds:
            path = args.results / f"{variant}-s{seed}.json"
            if path.exists():
                continue
            jobs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "steps": args.steps,
                    "every": args.every,
                    "path": str(path),
                }
            )
    print(f"{len(jobs)} runs to do")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for record in pool.map(run_one, jobs):
            f = record["final"]
            print(
                f"{record['variant']} s{record['seed']}: agree {f['g_agree']:.3f} ce {f['g_ce']:.3f} "
                f"bns {f['g_bns']:.3f} sim {f.get('g_sim', float('nan')):.3f} "
                f"({record['seconds']:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
