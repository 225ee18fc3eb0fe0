"""Data-free quantization of a teacher that takes [0, 1] images and normalizes them itself.

A shipped ResNet-20 is wrapped behind its own normalization (``Normalized`` below), so that it
takes the raw pixels of its data set, as a model shipped that way would; the wrapped model goes
to ``train(..., model=...)`` as an object. Each run quantizes it with the default
``risloss quantize`` budget, evaluated on unnormalized test images. Variants: ``auto`` (no
option: the default ``fit_input_statistics="auto"``), ``fit`` (the generator's output
statistics fitted to the teacher's first BatchNorm layer, ``--fit-input-statistics``) and
``plain`` (started standardized, ``--no-fit-input-statistics``: the default before "auto").
Compare with the bare teacher's ``gdfq`` and ``ris`` rows of the ``full`` profile (Fashion-MNIST)
or the ``cifar10`` profile of ``benchmarks/dfq.py``. One JSON file per run under
``benchmarks/results/wrapped/`` (Fashion-MNIST, W4A4) or ``benchmarks/results/wrapped-cifar10/``;
existing files are skipped.

    python benchmarks/wrapped.py --jobs 2           # gdfq and ris, seeds 0 1 2, fitted
    python benchmarks/wrapped.py --model resnet20_cifar10 --bits 3 --variants auto plain \
        --methods ris --seeds 0                     # CIFAR-10 (RISLOSS_CIFAR10), W3A3
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
VARIANTS = {
    "fit": {"fit_input_statistics": True},
    "plain": {"fit_input_statistics": False},
    "auto": {},
}
DEFAULT_MODEL = "resnet20_fashion_mnist"


def results_folder(model: str) -> Path:
    """Where the runs of ``model`` go: ``wrapped/`` for the default teacher, else
    ``wrapped-<data set>/``."""
    if model == DEFAULT_MODEL:
        return RESULTS
    from risloss.models import pretrained_info

    return RESULTS.parent / f"wrapped-{pretrained_info(model)['dataset']}"


class Normalized(nn.Module):
    """A shipped ResNet-20 behind its own normalization: it takes [0, 1] images."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        super().__init__()
        from risloss.models import ARCHITECTURES, pretrained_info

        info = pretrained_info(model)
        c, _, side = info["input_shape"]
        build = ARCHITECTURES[info["arch"]]
        self.net = build(in_channels=c, num_classes=info["num_classes"], image_size=side)
        pre = info["preprocessing"]
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((x - self.mean) / self.std)
        return out


def pretrained(model: str = DEFAULT_MODEL) -> nn.Module:
    """The wrapped teacher with the shipped weights, frozen (also used by ``synthesis.py``)."""
    from risloss.models import load_pretrained

    wrapped = Normalized(model)
    wrapped.net.load_state_dict(load_pretrained(model).state_dict())
    return wrapped.eval().requires_grad_(False)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    from risloss.models import pretrained_info
    from risloss.training import TrainConfig, machine_info, train

    t0 = time.monotonic()
    model = job.get("model", DEFAULT_MODEL)
    config = TrainConfig(
        method=job["method"],
        seed=job["seed"],
        w_bits=job.get("bits", 4),
        a_bits=job.get("bits", 4),
        data=pretrained_info(model)["dataset"],
        normalize=None,  # the test images as the wrapped model takes them: [0, 1]
        **VARIANTS[job["variant"]],
    )
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(config, tmp, model=pretrained(model), log=notes.append, progress=False)
    record = {
        "variant": job["variant"],
        "method": job["method"],
        "seed": job["seed"],
        "model": model,
        "bits": job.get("bits", 4),
        "notes": [n for n in notes if n.startswith("note:")],
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
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the shipped teacher to wrap")
    parser.add_argument("--bits", type=int, default=4, choices=range(2, 9), help="W and A bits")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    folder = results_folder(args.model)
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"w{args.bits}a{args.bits}"
    jobs = [
        {
            "variant": v,
            "method": m,
            "seed": s,
            "model": args.model,
            "bits": args.bits,
            "path": str(folder / f"{v}-{m}-{tag}-s{s}.json"),
        }
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
                f"{r['variant']} {r['method']} s{r['seed']}: W{r['bits']}A{r['bits']} "
                f"{r['quant_top1']:.2f} "
                f"(fp {r['fp_top1']:.2f}), agree {syn['g_agree']:.3f}, bns {syn['g_bns']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
