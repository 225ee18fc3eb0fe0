"""Cost of the RIS generator objective: time per generator step and memory, against baselines.

Four kinds of generator step are timed, interleaved in one process (every round runs each kind
once, in an order rotated from round to round, so that drift of the machine's load affects all
kinds alike), and the median over the rounds is reported:

- ``ce``: ``x = G(z, y)``, teacher forward, cross-entropy, backward, optimizer step;
- ``ce+rob``: the same plus :class:`~risloss.RobustnessLoss` with ``num_draws = k``, reusing the
  clean pass (``clean_logits`` and ``clean_features`` captured with
  :func:`~risloss.hooks.capture_features`), for each ``k`` of ``--draws``;
- ``gdfq``: cross-entropy plus ``0.1 * L_BNS`` (:func:`~risloss.hooks.capture_bn_statistics`,
  :class:`~risloss.losses.BNStatisticsLoss`), GDFQ's generator step;
- ``ris``: ``gdfq`` plus the robustness loss (``k`` draws) and ``0.1 *``
  :func:`~risloss.functional.label_correlation_penalty`, the full RIS generator step.

Ratios: ``ce+rob / ce`` (the cost of the robustness term alone; one draw is one more forward and
backward pass of the teacher, so its floor is about 2.0 without a generator, less with one) and
``ris / gdfq`` (the generator-step ratio of the benchmark).

On the CPU the process CPU time of each step is recorded too (its median and ratio): on a
machine shared with other work it is less disturbed than wall time (on CUDA it only measures the
host side).

Memory: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` during one step, above the
memory allocated before it. On the CPU there is no reliable peak-memory counter inside one
process, so the figure is the activation memory: the bytes of the distinct tensors autograd saves
for the backward pass during the step (counted with
``torch.autograd.graph.saved_tensors_hooks``, parameters and buffers of the models excluded),
which is what dominates the peak of a training step.

The teacher is a randomly initialized CIFAR-style ResNet (``--model``), or a teacher shipped with
the package (``--shipped [NAME]``); the generator is GDFQ's (``--generator gdfq``), or none
(``--generator none``: ``x`` is a leaf tensor, which isolates the teacher's cost).

Usage::

    python benchmarks/cost.py --device cpu --steps 20 --draws 1 2 4
    python benchmarks/cost.py --device cuda --steps 100 --batch-size 64

On the CPU, glibc's allocator returns the memory of freed activations to the system and
faults it back in at every step; this costs a step more than in proportion to the memory it
uses, so ratios come out above the floor (about 2.3 instead of 2.0 for one draw on ResNet-20).
``--keep-freed-memory`` keeps freed memory in the process (``mallopt``), which removes that
effect (the same effect, and the same remedy through the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables, apply to CPU training runs).

Results are printed as markdown tables and written as JSON (``--out``): ``timings`` per step
kind, and ``results`` per number of draws with ``ce_ratio`` (``ce+rob / ce``), ``gdfq_ratio``
(``ris / gdfq``) and ``memory_ratio`` (``ris / gdfq``), each also as paired and CPU-time ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from risloss.functional import label_correlation_penalty
from risloss.hooks import capture_bn_statistics, capture_features
from risloss.losses import BNStatisticsLoss, RobustnessLoss
from risloss.models import (
    DEFAULT_TEACHER,
    Generator,
    list_pretrained,
    load_pretrained,
    pretrained_info,
    resnet8,
    resnet20,
)

BNS_WEIGHT = 0.1
ROBUSTNESS_WEIGHT = 1.0
DIVERSITY_WEIGHT = 0.1
ARCHS: dict[str, Callable[..., nn.Module]] = {"resnet20": resnet20, "resnet8": resnet8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time and memory of the RIS generator step against CE-only and GDFQ steps."
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed rounds (each runs every kind)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 2, 4], help="values of k")
    parser.add_argument("--model", choices=sorted(ARCHS), default="resnet20")
    parser.add_argument(
        "--shipped",
        nargs="?",
        const=DEFAULT_TEACHER,
        default=None,
        metavar="NAME",
        help=f"use a shipped teacher instead of a random --model (default {DEFAULT_TEACHER})",
    )
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-shape", type=int, nargs=3, default=[3, 32, 32], metavar="N")
    parser.add_argument("--generator", choices=("gdfq", "none"), default="gdfq")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="CPU, glibc: keep freed memory in the process instead of returning it to the OS",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.steps < 1 or args.warmup_steps < 0:
        parser.error("--batch-size must be >= 2, --steps >= 1 and --warmup-steps >= 0")
    if any(k < 1 for k in args.draws):
        parser.error(f"--draws must be >= 1, got {args.draws}")
    if args.keep_freed_memory and args.device != "cpu":
        parser.error("--keep-freed-memory applies to --device cpu only")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.out is None:
        args.out = Path("benchmarks") / "results" / f"cost_{args.device}.json"
    return args


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory in the process (``mallopt``).

    By default glibc serves large blocks with ``mmap`` and returns freed memory to the system,
    so every step page-faults (and zero-fills) its activation memory afresh; a step that uses
    ``k + 1`` times the memory pays that more than ``k + 1`` times. Raising the mmap and trim
    thresholds keeps freed blocks for reuse, as PyTorch's caching allocator does on CUDA.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        sys.exit("--keep-freed-memory needs glibc's mallopt")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    for option, value in (
        (m_mmap_threshold, 32 * 2**20),
        (m_trim_threshold, 2**30),
        (m_top_pad, 64 * 2**20),
    ):
        if libc.mallopt(option, value) != 1:
            sys.exit(f"mallopt({option}, {value}) failed")


def build_teacher(args: argparse.Namespace) -> tuple[nn.Module, str, tuple[int, int, int], int]:
    if args.shipped is not None:
        names = sorted(list_pretrained())
        if args.shipped not in names:
            sys.exit(f"--shipped must be one of {names}, got {args.shipped!r}")
        meta = pretrained_info(args.shipped)
        shape = tuple(int(v) for v in meta["input_shape"])
        return (
            load_pretrained(args.shipped),
            args.shipped,
            (shape[0], shape[1], shape[2]),
            int(meta["num_classes"]),
        )
    c, h, w = args.image_shape
    model = ARCHS[args.model](num_classes=args.num_classes, in_channels=c, image_size=h)
    return model, f"{args.model} (random init)", (c, h, w), args.num_classes


class Steps:
    """Generator steps of every kind, sharing one teacher, generator and batch stream."""

    def __init__(
        self,
        teacher: nn.Module,
        shape: tuple[int, int, int],
        num_classes: int,
        batch_size: int,
        draws: list[int],
        use_generator: bool,
        device: torch.device,
        seed: int,
    ) -> None:
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.device = device
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.rng = torch.Generator().manual_seed(seed)
        c, h, _ = shape
        self.generator: Generator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if use_generator:
            self.generator = Generator(num_classes=num_classes, image_size=h, channels=c).to(device)
            self.optimizer = torch.optim.Adam(
                self.generator.parameters(), lr=1e-3, betas=(0.5, 0.999)
            )
        self.images = torch.randn((batch_size, *shape), generator=self.rng).to(device)
        self.bns = BNStatisticsLoss()
        self.robustness = {
            k: RobustnessLoss(
                self.teacher,
                num_draws=k,
                generator=torch.Generator(device=device).manual_seed(seed + k),
            )
            for k in draws
        }

    def persistent_storages(self) -> set[int]:
        """Storage addresses of the models' parameters and buffers (not activation memory)."""
        tensors = [*self.teacher.parameters(), *self.teacher.buffers()]
        if self.generator is not None:
            tensors += [*self.generator.parameters(), *self.generator.buffers()]
        return {t.untyped_storage().data_ptr() for t in tensors}

    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=self.rng)
        labels = labels.to(self.device)
        if self.generator is None:
            return self.images.detach().requires_grad_(), labels
        z = torch.randn((self.batch_size, self.generator.latent_dim), generator=self.rng)
        return self.generator(z.to(self.device), labels), labels

    def run(self, kind: str, draws: int) -> None:
        """One generator step: forward, the objective of ``kind``, backward, optimizer step."""
        x, labels = self._inputs()
        rob = self.robustness.get(draws)
        with_rob = kind in ("ce+rob", "ris")
        with_bns = kind in ("gdfq", "ris")
        with ExitStack() as stack:
            feats = (
                stack.enter_context(capture_features(self.teacher, rob.feature_layers))
                if with_rob and rob is not None and rob.feature_layers
                else {}
            )
            bn = stack.enter_context(capture_bn_statistics(self.teacher)) if with_bns else None
            logits = self.teacher(x)
        loss = F.cross_entropy(logits, labels)
        if bn is not None:
            loss = loss + BNS_WEIGHT * self.bns(bn.statistics())
        if with_rob:
            assert rob is not None
            loss = loss + ROBUSTNESS_WEIGHT * rob(x, clean_logits=logits, clean_features=feats)
        if kind == "ris":
            loss = loss + DIVERSITY_WEIGHT * label_correlation_penalty(logits, labels)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def saved_tensor_bytes(exclude: set[int]) -> Iterator[list[int]]:
    """Count the bytes of distinct storages autograd saves for backward inside the block."""
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        address = storage.data_ptr()
        if address not in seen and address not in exclude:
            seen.add(address)
            total[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def measure_memory(steps: Steps, kind: str, draws: int) -> tuple[int, str]:
    device = steps.device
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        steps.run(kind, draws)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, "cuda peak allocated"
    with saved_tensor_bytes(steps.persistent_storages()) as total:
        steps.run(kind, draws)
    return total[0], "autograd saved tensors"


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    teacher, teacher_name, shape, num_classes = build_teacher(args)
    steps = Steps(
        teacher,
        shape,
        num_classes,
        args.batch_size,
        list(args.draws),
        args.generator == "gdfq",
        device,
        args.seed,
    )
    kinds: list[tuple[str, int]] = [("ce", 0), ("gdfq", 0)]
    kinds += [(kind, k) for k in args.draws for kind in ("ce+rob", "ris")]
    times: dict[tuple[str, int], list[float]] = {kind: [] for kind in kinds}
    cpu_times: dict[tuple[str, int], list[float]] = {kind: [] for kind in kinds}
    for r in range(args.warmup_steps + args.steps):
        shift = r % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps.run(*kind)
            synchronize(device)
            if r >= args.warmup_steps:
                times[kind].append(time.perf_counter() - start)
                cpu_times[kind].append(time.process_time() - cpu_start)
    memory = {kind: measure_memory(steps, *kind) for kind in kinds}

    def summary(kind: tuple[str, int]) -> dict[str, float]:
        values = sorted(times[kind])
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return {
            "median_s": statistics.median(values),
            "p25_s": q[0],
            "p75_s": q[2],
            "cpu_median_s": statistics.median(cpu_times[kind]),
        }

    timings = []
    for kind in kinds:
        bytes_, measure = memory[kind]
        timings.append({"kind": kind[0], "draws": kind[1], **summary(kind), "memory_bytes": bytes_})

    def ratios(kind: tuple[str, int], base: tuple[str, int]) -> dict[str, float]:
        return {
            "time": summary(kind)["median_s"] / summary(base)["median_s"],
            # Both kinds ran close in time in every round: the median of the per-round ratios
            # cancels slow changes of the machine's load better than the ratio of medians.
            "paired": statistics.median(
                t / t_base for t, t_base in zip(times[kind], times[base], strict=True)
            ),
            "cpu": summary(kind)["cpu_median_s"] / summary(base)["cpu_median_s"],
            "memory": memory[kind][0] / max(memory[base][0], 1),
        }

    results = []
    for k in args.draws:
        ce = ratios(("ce+rob", k), ("ce", 0))
        gdfq = ratios(("ris", k), ("gdfq", 0))
        results.append(
            {
                "draws": k,
                "ce_ratio": ce["time"],
                "ce_ratio_paired": ce["paired"],
                "ce_ratio_cpu": ce["cpu"],
                "ce_memory_ratio": ce["memory"],
                "gdfq_ratio": gdfq["time"],
                "gdfq_ratio_paired": gdfq["paired"],
                "gdfq_ratio_cpu": gdfq["cpu"],
                "memory_ratio": gdfq["memory"],
            }
        )
    return {
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "teacher": teacher_name,
        "input_shape": list(shape),
        "generator": args.generator,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "keep_freed_memory": args.keep_freed_memory,
        "memory_measure": measure,
        "timings": timings,
        "results": results,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one table of step timings, one of ratios per number of draws."""
    lines = [
        f"Teacher {report['teacher']} {tuple(report['input_shape'])}, generator "
        f"{report['generator']}, batch {report['batch_size']}, {report['steps']} interleaved "
        f"rounds, {report['device_name']}, torch {report['torch_version']}, "
        f"{report['threads']} threads"
        f"{', freed memory kept' if report['keep_freed_memory'] else ''}. "
        f"Memory: {report['memory_measure']}.",
        "",
        "| step | draws | median ms | IQR ms | process-CPU median ms | memory MiB |",
        "|---|---|---|---|---|---|",
    ]
    for e in report["timings"]:
        lines.append(
            f"| {e['kind']} | {e['draws'] or '-'} | {1e3 * e['median_s']:.1f} | "
            f"{1e3 * e['p25_s']:.1f}-{1e3 * e['p75_s']:.1f} | {1e3 * e['cpu_median_s']:.1f} | "
            f"{e['memory_bytes'] / 2**20:.1f} |"
        )
    lines += [
        "",
        "Ratios: of medians (paired: median of per-round ratios; CPU: of process-CPU medians).",
        "",
        "| draws | (CE + rob) / CE time | paired | CPU | memory "
        "| ris / gdfq time | paired | CPU | memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['draws']} | {r['ce_ratio']:.2f} | {r['ce_ratio_paired']:.2f} | "
            f"{r['ce_ratio_cpu']:.2f} | {r['ce_memory_ratio']:.2f} | {r['gdfq_ratio']:.2f} | "
            f"{r['gdfq_ratio_paired']:.2f} | {r['gdfq_ratio_cpu']:.2f} | "
            f"{r['memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = benchmark(args)
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
