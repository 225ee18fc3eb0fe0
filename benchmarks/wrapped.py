"""Data-free quantization of a teacher that takes [0, 1] images and normalizes them itself.

The shipped ResNet-20 is wrapped behind its own normalization (``Normalized`` below), so that it
takes the raw pixels of Fashion-MNIST, as a model shipped that way would; the wrapped model goes
to ``train(..., model=...)`` as an object. Each run quantizes it to W4A4 with the default
``risloss quantize`` budget, evaluated on unnormalized test images, with the generator's
output statistics fitted to the teacher's first BatchNorm layer
(``fit_input_statistics=True``, ``--fit-input-statistics``) and without (``--variants plain``).
Compare with the bare teacher's ``gdfq`` and ``ris`` rows of ``benchmarks/results/full/``.
One JSON file per run under ``benchmarks/results/wrapped/``; existing files are skipped.

    python benchmarks/wrapped.py --jobs 2           # gdfq and ris, seeds 0 1 2, fitted
    python docs/scripts/report.py                   # the table in docs/benchmarks.md
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

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results" / "wrapped"
VARIANTS = {"fit": {"fit_input_statistics": True}, "plain": {}}


class Normalized(nn.Module):
    """The shipped ResNet-20 behind its own normalization: it takes [0, 1] images."""

    def __init__(self) -> None:
        super().__init__()
        from risloss.models import pretrained_info, resnet20

        info = pretrained_info("resnet20_fashion_mnist")
        self.net = resnet20(in_channels=1, num_classes=10, image_size=28)
        pre = info["preprocessing"]
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((x - self.mean) / self.std)
        return out


def pretrained() -> nn.Module:
    """The wrapped teacher with the shipped weights, frozen (also used by ``synthesis.py``)."""
    from risloss.models import load_pretrained

    wrapped = Normalized()
    wrapped.net.load_state_dict(load_pretrained().state_dict())
    return wrapped.eval().requires_grad_(False)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    from risloss.training import RISConfig, TrainConfig, machine_info, train

    t0 = time.monotonic()
    config = TrainConfig(
        method=job["method"],
        seed=job["seed"],
        normalize=None,  # the test images as the wrapped model takes them: [0, 1]
        ris=RISConfig(),
        **VARIANTS[job["variant"]],
    )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(config, tmp, model=pretrained(), log=None, progress=False)
    record = {
        "variant": job["variant"],
        "method": job["method"],
        "seed": job["seed"],
        "fp_top1": metrics["fp_top1"],
        "quant_top1": metrics["quant_top1"],
        "synthesis": metrics["synthesis"],
        "config": {k: v for k, v in metrics["config"].items() if k != "weights"},
        "objects": metrics["objects"],  # the teacher: this module's Normalized
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.monotonic() - t0,
        "torch_version": torch.__version__,
        "machine": machine_info(),
    }
    path = Path(job["path"])
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp_path, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fit"])
    parser.add_argument("--methods", nargs="+", choices=("gdfq", "ris"), default=["gdfq", "ris"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jobs = [
        {"variant": v, "method": m, "seed": s, "path": str(RESULTS / f"{v}-{m}-w4a4-s{s}.json")}
        for v in args.variants
        for m in args.methods
        for s in args.seeds
    ]
    jobs = [j for j in jobs if not Path(j["path"]).exists()]
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(run_one, jobs):
            syn = r["synthesis"]
            print(
                f"{r['variant']} {r['method']} s{r['seed']}: W4A4 {r['quant_top1']:.2f} "
                f"(fp {r['fp_top1']:.2f}), agree {syn['g_agree']:.3f}, bns {syn['g_bns']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
