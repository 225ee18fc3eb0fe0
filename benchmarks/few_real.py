"""How much a fresh student learns from a handful of real images: the yardstick of distillation.

The extension suite's distillation (ResNet-20 into a fresh ResNet-8, 1,200 iterations, the
student on augmented views relabelled by the teacher at temperature 4) run with real training
images, but only ``K`` of them per class (drawn once per seed, at random): the ``real`` row of
that suite with its data cut down. Set beside the synthesized rows, it says how many real
images per class the synthesized ones are worth to a student that learns from them alone.

Each subset goes to an ordinary ``train()`` call as its ``train_data`` object (:func:`subset`);
the test split is the full one (10,000 images). One JSON file per run under
``benchmarks/results/few_real/``; existing files are skipped.

    python benchmarks/few_real.py --jobs 2                 # K = 1, 10, 100; seeds 0 1 2
    python benchmarks/few_real.py --per-class 1 --seeds 0
    python docs/scripts/report.py                          # the table in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "few_real"
PER_CLASS = (1, 10, 100)


def subset(split: str, per_class: int, seed: int) -> Any:
    """Fashion-MNIST's ``split``, normalized as the shipped teacher expects; for ``"train"``
    only ``per_class`` images of each class, drawn with ``seed``."""
    from risloss.data import TensorImageDataset, load_dataset

    data = load_dataset("fashion-mnist", split)
    if split != "train":
        return data
    assert isinstance(data, TensorImageDataset)  # Fashion-MNIST is read into two tensors
    rng = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(10):
        members = torch.nonzero(data.labels == c).flatten()
        keep.append(members[torch.randperm(len(members), generator=rng)[:per_class]])
    idx = torch.cat(keep)
    return TensorImageDataset(
        data.images[idx], data.labels[idx], classes=data.classes, mean=data.mean, std=data.std
    )


def _sibling(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, loaded from its file (its folder need not be importable)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_of(per_class: int, seed: int) -> Any:
    """The extension suite's distillation on real images (the training split, cut to
    ``per_class`` images per class, goes to ``train()`` as an object: :func:`subset`)."""
    from risloss.training import RISConfig, TrainConfig

    return TrainConfig(
        **_sibling("dfq").EXTENSION_TASKS["distill"],
        method="real",
        seed=seed,
        batch_size=32,
        fit_input_statistics=False,  # the value the committed runs were made under
        ris=RISConfig(),  # unused by real images; the value recorded then
    )


def result_path(per_class: int, seed: int) -> Path:
    return RESULTS / f"real-{per_class}_seed{seed}.json"


def run_one(job: tuple[int, int]) -> dict[str, Any]:
    per_class, seed = job
    torch.set_num_threads(1)
    from risloss.training import machine_info, train

    config = config_of(per_class, seed)
    t0 = time.monotonic()
    train_data = subset("train", per_class, seed)
    with tempfile.TemporaryDirectory() as out:
        metrics = train(config, out, train_data=train_data, log=None, progress=False)
    record = {
        "row": f"real-{per_class}",
        "per_class": per_class,
        "seed": seed,
        "student_top1": metrics["student_top1"],
        "num_test_images": metrics.get("num_test_images"),
        "final_losses": metrics["history"][-1],
        "config": metrics["config"],
        "objects": metrics["objects"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.monotonic() - t0,
        "torch_version": torch.__version__,
        "machine": machine_info(),
        "torch_threads": 1,
        "device": "cpu",
    }
    path = result_path(per_class, seed)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=list(PER_CLASS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    bad = [k for k in args.per_class if not 1 <= k <= 6000]
    if bad:
        parser.error(f"--per-class takes 1 to 6000 images per class, got {bad}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    jobs = [(k, s) for s in args.seeds for k in args.per_class if not result_path(k, s).exists()]
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(run_one, jobs):
            print(f"{r['row']} seed {r['seed']}: top-1 {r['student_top1']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
