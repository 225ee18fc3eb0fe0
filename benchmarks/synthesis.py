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
    python benchmarks/report.py                             # tables into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "synthesis"

# Each variant overrides DEFAULTS: the objective, the teacher, Generator keyword arguments, the
# Adam learning rate and the output statistics' learning-rate multiple ("generator" holds
# keyword arguments of the trainer's GeneratorSource).
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


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from risloss import RISConfig
    from risloss.models import load_pretrained
    from risloss.training._sources import GeneratorSource

    v = {**DEFAULTS, **VARIANTS[job["variant"]]}
    if v["teacher"] == "wrapped":  # the teacher of benchmarks/wrapped.py: it takes [0, 1] images
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from wrapped import pretrained

        teacher = pretrained()
    else:
        teacher = load_pretrained()
    torch.manual_seed(job["seed"])
    # The trainer's own image source: the generator, its optimizer, labels and objective.
    source = GeneratorSource(
        teacher,
        method=v["objective"],
        ris=RISConfig(
            bns_weight=v["bns_weight"],
            diversity=v["diversity"],
            feature_diversity_weight=v["feature_diversity_weight"],
        ),
        num_classes=10,
        shape=(1, 28, 28),
        batch_size=v["batch_size"],
        lr=v["lr"],
        rng=torch.Generator().manual_seed(job["seed"]),
        perturbation_rng=torch.Generator().manual_seed(job["seed"] + 1),
        device=torch.device("cpu"),
        output_lr_scale=v["output_lr"],
        **v["generator"],
    )
    every = job["every"]
    window: list[dict[str, float]] = []
    curve = []
    t0 = time.monotonic()
    for step in range(1, job["steps"] + 1):
        window.append(source.next_batch().parts)
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
        "seconds": time.monotonic() - t0,
        "torch_version": torch.__version__,
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
