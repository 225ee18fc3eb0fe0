"""Data-free distillation at the default `risloss distill` budget, beside its yardsticks.

Every row is the default distillation (the shipped Fashion-MNIST ResNet-20 into a fresh ResNet-8:
a pool of images, many student steps on it with augmentation, MixUp and the teacher's logits at
temperature 4; see ``TrainConfig``) with one thing changed, the images that fill the pool:

- ``ris``, ``gdfq``: synthesized by the generator (the default objective of ``distill``:
  :func:`risloss.training.ris_for`);
- ``noise``: Gaussian noise images labelled by the teacher (the floor);
- ``real-1``, ``real-10``, ``real-100``: 1, 10 or 100 real training images per class (drawn
  once per seed), labelled by the teacher like the others.

On CIFAR-10 (``--data cifar10``, the shipped CIFAR-10 ResNet-20 into a fresh ResNet-8) the rows
are ``ris`` and ``gdfq`` at the default and ``ris-before``, ``gdfq-before``: the regime before
the pool (``before_settings()``), so that the distillation defaults are measured before and
after on both data sets.

The same student steps, batch sizes, schedules and seeds for every row. Each run evaluates the
student every ``EVAL_EVERY`` iterations and records the seconds spent in the iterations until
then (evaluations left out), for the plot of top-1 against minutes. One JSON file per run under
``benchmarks/results/distill/``; existing files are skipped, so an interrupted benchmark resumes.

    python benchmarks/distill.py --jobs 2                  # every row, seeds 0 1 2
    python benchmarks/distill.py --rows ris gdfq --seeds 0
    python benchmarks/distill.py --data cifar10 --seeds 0 --jobs 2   # CIFAR-10, before and after
    python docs/scripts/report.py                          # the table and plot in the docs
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
RESULTS = HERE / "results" / "distill"
ROWS = ("ris", "gdfq", "noise", "real-1", "real-10", "real-100")
# The regime before the pool, for the before-and-after of the distillation defaults: the
# settings of the committed extension-suite distillation runs of benchmarks/dfq.py (one student
# step per iteration on the iteration's own batch, no pool, no MixUp, no adversarial term,
# unbounded images) with the quantization objective; see before_settings().
BEFORE_ROWS = ("ris-before", "gdfq-before")
# --data: the shipped teacher of each data set, its results folder and its default rows
DATA: dict[str, tuple[str, Path, tuple[str, ...]]] = {
    "fashion-mnist": ("resnet20_fashion_mnist", RESULTS, ROWS),
    "cifar10": (
        "resnet20_cifar10",
        HERE / "results" / "distill-cifar10",
        ("ris", "gdfq", *BEFORE_ROWS),
    ),
}
EVAL_EVERY = 100


def _sibling(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, loaded from its file (its folder need not be importable)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def before_settings() -> dict[str, Any]:
    """The budget and student settings of ``benchmarks/dfq.py``'s extension-suite distillation
    (its task, student and bit widths left out)."""
    pinned = _sibling("dfq").EXTENSION_TASKS["distill"]
    return {k: v for k, v in pinned.items() if k not in ("task", "student", "w_bits", "a_bits")}


def subset(per_class: int, seed: int) -> Any:
    """Fashion-MNIST's training split, normalized as the shipped teacher expects, cut to
    ``per_class`` images of each class drawn with ``seed``: the draw of
    ``benchmarks/few_real.py``."""
    return _sibling("few_real").subset("train", per_class, seed)


def config_of(
    row: str,
    seed: int,
    iters: int | None = None,
    data: str = "fashion-mnist",
    lr_student: float | None = None,
) -> Any:
    """The default `risloss distill` configuration of ``data``'s shipped teacher with ``row``'s
    image source (a ``*-before`` row: the regime before the pool, :func:`before_settings`);
    ``iters`` and ``lr_student``, when given, replace the default budget and student
    learning rate."""
    from risloss.training import RISConfig, TrainConfig

    method = "real" if row.startswith("real-") else row.removesuffix("-before")
    extra: dict[str, Any] = {}
    if row in BEFORE_ROWS:
        extra = {**before_settings(), "ris": RISConfig()}
    if iters is not None:
        extra.update(iters=iters, warmup=iters // 3)
    if lr_student is not None:
        extra.update(lr_student=lr_student)
    return TrainConfig(
        task="distill",
        method=method,
        model=DATA[data][0],
        seed=seed,
        w_bits=None,
        a_bits=None,
        eval_every=EVAL_EVERY,
        **extra,
    )


def result_path(row: str, seed: int, folder: Path = RESULTS) -> Path:
    return folder / f"{row}_seed{seed}.json"


def real_similarity(seed: int, batches: int = 50, batch_size: int = 32) -> float:
    """The teacher's within-class similarity of its penultimate features
    (:func:`risloss.objective.class_similarity`) on random real training batches: the figure
    the generator's ``g_sim`` is set beside."""
    from risloss.data import load_dataset
    from risloss.hooks import capture_features
    from risloss.models import load_pretrained
    from risloss.objective import within_class_similarity

    teacher = load_pretrained("resnet20_fashion_mnist").eval()
    data = load_dataset("fashion-mnist", "train")
    rng = torch.Generator().manual_seed(seed)
    values = []
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(0, len(data), (batch_size,), generator=rng)
            x, y = data.images[idx], data.labels[idx]  # type: ignore[attr-defined]
            with capture_features(teacher, "penultimate", kind="input", detach=True) as store:
                teacher(x)
            sim = within_class_similarity(next(iter(store.values())), y)
            if sim is not None:
                values.append(float(sim))
    return sum(values) / len(values)


def run_one(job: tuple[str, int, int, int | None, Path, str, float | None]) -> dict[str, Any]:
    row, seed, threads, iters, folder, data, lr_student = job
    torch.set_num_threads(threads)
    from risloss.training import machine_info, train

    config = config_of(row, seed, iters, data, lr_student)
    t0 = time.monotonic()
    train_data = subset(int(row.split("-")[1]), seed) if row.startswith("real-") else None
    with tempfile.TemporaryDirectory() as out:
        metrics = train(config, out, train_data=train_data, log=None, progress=False)
    record = {
        "row": row,
        "seed": seed,
        "fp_top1": metrics["fp_top1"],
        "student_top1": metrics["student_top1"],
        "evals": metrics["evals"],
        "synthesis": metrics["synthesis"],
        "num_test_images": metrics["num_test_images"],
        "final_losses": metrics["history"][-1],
        "config": metrics["config"],
        "objects": metrics["objects"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.monotonic() - t0,
        "torch_version": torch.__version__,
        "machine": machine_info(),
        "torch_threads": threads,
        "device": "cpu",
    }
    # the reference the synthesized images' g_sim is read against
    if row == "real-10" and data == "fashion-mnist":
        record["real_batch_similarity"] = real_similarity(seed)
    path = result_path(row, seed, folder)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default="fashion-mnist",
        choices=list(DATA),
        help="the shipped teacher's data set (default: fashion-mnist; cifar10 reads the images "
        "from RISLOSS_CIFAR10, see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        choices=ROWS + BEFORE_ROWS,
        help="default: every row of --data (Fashion-MNIST: "
        + ", ".join(ROWS)
        + "; CIFAR-10: "
        + ", ".join(DATA["cifar10"][2])
        + ")",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of each run (default: 1)"
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="iterations of every run, a third of them warm-up (default: the default "
        "`risloss distill`'s); a smoke run, written beside the others only with --out",
    )
    parser.add_argument(
        "--lr-student",
        type=float,
        default=None,
        help="learning rate of the student in every run (default: the default `risloss "
        "distill`'s); a measurement of another default, written only with --out",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads take 1 or more")
    if args.out is None and args.iters is not None:
        parser.error("--iters changes the budget: give --out, so the committed results stay")
    if args.out is None and args.lr_student is not None:
        parser.error("--lr-student changes a default: give --out, so the committed results stay")
    if args.lr_student is not None and not 0 < args.lr_student <= 10:
        parser.error(f"--lr-student takes a number in (0, 10], got {args.lr_student}")
    rows = DATA[args.data][2] if args.rows is None else args.rows
    if args.data != "fashion-mnist" and any(r.startswith("real-") for r in rows):
        parser.error("--rows real-*: the real subsets are drawn from Fashion-MNIST only")
    folder = DATA[args.data][1] if args.out is None else args.out
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (r, s, args.threads, args.iters, folder, args.data, args.lr_student)
        for s in args.seeds
        for r in rows
        if not result_path(r, s, folder).exists()
    ]
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(run_one, jobs):
            print(
                f"{r['row']} seed {r['seed']}: top-1 {r['student_top1']:.2f} "
                f"({r['train_seconds'] / 60:.1f} min)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
