"""The data-free training loop shared by quantization, distillation and pruning."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from risloss._checkpoint import atomic_save, load_checkpoint
from risloss._eval import evaluate
from risloss.data import load_dataset
from risloss.distributed import DistributedContext, init_from_env, rank_seed
from risloss.training._config import TrainConfig
from risloss.training._models import build_student, load_teacher
from risloss.training._progress import Progress
from risloss.training._sources import (
    GeneratorSource,
    ImageSource,
    NoiseSource,
    RealSource,
    soft_cross_entropy,
)

__all__ = ["TrainingInterrupted", "train"]

CHECKPOINT = "checkpoint.pt"


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once the run's state is safely checkpointed.

    Continue the run with ``train(config, out_dir, resume=True)`` (``--resume`` on the command
    line).

    Args:
        path: the checkpoint file that was written.
        iteration: the number of iterations completed.

    Example:
        >>> from pathlib import Path
        >>> from risloss.training import TrainingInterrupted
        >>> err = TrainingInterrupted(Path("runs/q/checkpoint.pt"), 120)
        >>> err.iteration, str(err)
        (120, 'interrupted at iteration 120; checkpoint saved to runs/q/checkpoint.pt')
    """

    def __init__(self, path: Path, iteration: int) -> None:
        super().__init__(f"interrupted at iteration {iteration}; checkpoint saved to {path}")
        self.path = path
        self.iteration = iteration


@contextmanager
def _interruptible(grace: float = 0.0) -> Iterator[Callable[[], bool]]:
    """Turn SIGINT/SIGTERM into a flag checked between iterations (main thread only).

    A second signal stops at once, unless it comes within ``grace`` seconds of the first:
    under torchrun a Ctrl-C reaches each worker twice, from the terminal and from the launcher.
    """
    received: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received and time.monotonic() - received[0] >= grace:
            raise KeyboardInterrupt  # a second signal: stop at once
        if not received:
            received.append(time.monotonic())

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The distillation term of the student's loss; the ``T^2`` factor keeps the gradient scale
    independent of the temperature.

    Args:
        student_logits: ``(B, C)``, carries the gradient.
        teacher_logits: ``(B, C)``, the target (pass it detached).
        t: the temperature ``T > 0``.

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> from risloss.training import kd_loss
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> kd_loss(z, z, 4.0).item()
        0.0
        >>> bool(kd_loss(z, z.flip(1), 4.0) > 0)
        True
    """
    return (t * t) * F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _eval_set(config: TrainConfig) -> Any:
    test = load_dataset(config.data, "test")
    if config.eval_limit is not None and config.eval_limit < len(test):  # type: ignore[arg-type]
        test = Subset(test, range(config.eval_limit))
    return test


def _image_shape(dataset: Any) -> tuple[int, int, int]:
    x = dataset[0][0]
    if x.ndim != 3:
        raise ValueError(f"expected (C, H, W) images, the data set yields {tuple(x.shape)}")
    return (int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))


class _TensorShard:
    """Rows ``rank::world`` of a data set that holds ``images`` and ``labels`` tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def _evaluate(model: nn.Module, test: Any, ctx: DistributedContext) -> float:
    """Top-1 accuracy in percent; in a distributed run each rank scores every K-th image."""
    if not ctx.distributed:
        return evaluate(model, test)
    import torch.distributed as dist

    n = len(test)
    rows = range(ctx.rank, n, ctx.world_size)
    correct = 0
    if len(rows):
        images, labels = getattr(test, "images", None), getattr(test, "labels", None)
        shard: Any
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
            index = torch.arange(ctx.rank, n, ctx.world_size)
            shard = _TensorShard(images[index], labels[index])
        else:
            shard = Subset(test, rows)
        correct = round(evaluate(model, shard) * len(rows) / 100.0)
    total = torch.tensor([correct], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(total)
    return 100.0 * int(total.item()) / n


def _reduce_parts(parts: dict[str, float], stop: bool, ctx: DistributedContext) -> bool:
    """Average the loss components over ranks (in place); whether any rank asked to stop."""
    import torch.distributed as dist

    keys = sorted(k for k in parts if k not in ("iter", "lr"))
    values = torch.tensor(
        [parts[k] for k in keys] + [float(stop)], dtype=torch.float64, device=ctx.device
    )
    dist.all_reduce(values)
    summed = values.tolist()
    for k, v in zip(keys, summed, strict=False):
        parts[k] = v / ctx.world_size
    return summed[-1] > 0


def _load_resume_state(
    ckpt_path: Path, config: TrainConfig, ctx: DistributedContext
) -> dict[str, Any]:
    """Read and check the checkpoint (rank 0 reads it and sends it to the other ranks)."""
    state: Any = None
    error = None
    if ctx.is_main():
        try:
            if not ckpt_path.is_file():
                raise ValueError(f"resume: no checkpoint at {ckpt_path}")
            state = load_checkpoint(
                ckpt_path, expected="a checkpoint of a risloss run", keys=("config", "iteration")
            )
            saved = state["config"]
            if saved != config.to_dict():
                diff = sorted(k for k in saved if saved[k] != config.to_dict().get(k))
                raise ValueError(f"resume: the checkpoint was made with other settings ({diff})")
        except ValueError as exc:
            if not ctx.distributed:
                raise
            state, error = None, str(exc)
    if ctx.distributed:
        import torch.distributed as dist

        box = [state, error]
        dist.broadcast_object_list(box, src=0, device=ctx.device)
        state, error = box
        if error is not None:
            raise ValueError(error)
    saved_world = int(state.get("world_size", 1))
    if saved_world != ctx.world_size:
        raise ValueError(
            f"resume: the checkpoint was written by a run on {saved_world} process(es); resume "
            f"it with the same number (this run has {ctx.world_size})"
        )
    result: dict[str, Any] = state
    return result


def _is_quantized(model: nn.Module) -> bool:
    from risloss.quant import quantized_layers

    return bool(quantized_layers(model))


def _compression_metrics(
    config: TrainConfig, teacher: nn.Module, student: nn.Module, shape: tuple[int, int, int]
) -> dict[str, Any]:
    """What distillation or pruning changed: size, MACs and sparsity of teacher and student."""
    from risloss.pruning import model_stats

    before, after = model_stats(teacher, shape), model_stats(student, shape)
    if config.task == "prune":
        return {
            "prune": {
                "target_sparsity": config.sparsity,
                "structured": config.structured,
                "before": before,
                "after": after,
            }
        }
    if config.task == "distill":
        return {"distill": {"arch": config.student, "teacher": before, "student": after}}
    return {}


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run one data-free compression job and write its outputs to ``out_dir``.

    One loop serves the three tasks of :class:`TrainConfig`; only the student differs:

    - ``task="quantize"``: a fake-quantized copy of the teacher (``w_bits``/``a_bits``);
    - ``task="distill"``: a fresh, smaller network (``student="resnet8"``), optionally quantized;
    - ``task="prune"``: a copy of the teacher pruned by :func:`risloss.pruning.prune_model`
      (``sparsity``, ``structured``), optionally quantized; unstructured masks stay in place
      while it trains, so pruned weights stay zero.

    Warm-up iterations train only the generator (and calibrate activation ranges of a quantized
    student on its images); every later iteration takes one generator step and one student step
    on the same batch. The student minimizes
    ``kd_weight * T^2 * KL(teacher || student) + ce_weight * CE``. A copy of the teacher
    (quantize, prune) trains in eval mode: its BatchNorm statistics stay fixed and only their
    affine parameters train. A distillation student starts from scratch and trains in train
    mode, so its BatchNorm layers learn the statistics of the synthesized images.

    Outputs: ``student.pt`` (state dict), ``generator.pt`` (generator methods), ``metrics.json``,
    ``samples.png`` (a row per class), ``losses.png`` and ``checkpoint.pt``. ``metrics.json``
    holds the configuration, ``fp_top1`` (teacher), ``student_top1`` (the trained model, every
    task), ``quant_top1`` (the same number, only when the student is quantized), the evaluations
    and per-iteration loss components, and :func:`risloss.pruning.model_stats` (``params``,
    ``nonzero_params``, ``macs``, ``effective_macs``, ``sparsity``) of both models: under
    ``prune`` as ``{"before": teacher, "after": student, ...}``, under ``distill`` as
    ``{"arch": ..., "teacher": ..., "student": ...}``.

    ``student.pt`` holds plain weights: pruning masks are made permanent with
    :func:`risloss.pruning.finalize_pruning` (``checkpoint.pt`` keeps them, for resuming). To
    load it, rebuild the student the same way: ``resnet8(...)`` for distillation,
    ``prune_model(teacher, sparsity=s, structured=True)`` for structured pruning (the kept
    channels follow from the teacher's weights), then :func:`risloss.quant.quantize_model` if
    the run quantized.

    Example:
        >>> from risloss.training import TrainConfig, train
        >>> config = TrainConfig(task="prune", sparsity=0.5, w_bits=None, a_bits=None)
        >>> metrics = train(config, "runs/prune")  # doctest: +SKIP
        >>> metrics["prune"]["after"]["sparsity"]  # doctest: +SKIP
        0.5

    Under ``torchrun --nproc_per_node=K`` (``WORLD_SIZE > 1`` in the environment) the run is
    data-parallel over ``K`` processes, see :mod:`risloss.distributed`: ``batch_size`` is the
    batch of each process (the global batch is ``K * batch_size``), the generator and the
    student train under DistributedDataParallel, rank ``r`` draws its images from seed
    :func:`risloss.distributed.rank_seed` ``(seed, r)``, the correlation penalty covers the
    global batch, and with ``global_batch_statistics`` so do the BatchNorm statistics (the
    generator's, a distillation student's and the BNS loss's). Activation ranges are calibrated
    on the gathered global batch, identically on every rank. Rank 0 writes every output and the
    checkpoint (with each rank's random state); a checkpoint resumes only with the same number
    of processes. ``metrics.json`` then also records ``world_size`` and ``global_batch_size``.

    Args:
        config: the run.
        out_dir: output folder (created).
        resume: continue from ``out_dir/checkpoint.pt``; the configuration must match. On the CPU
            a resumed run ends bitwise equal to an uninterrupted one.
        progress: show a progress line (default: only on a terminal).
        log: where one-line messages go (``None``: silent).

    Returns:
        The metrics dictionary written to ``metrics.json``.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint (in a distributed
            run every rank stops at the same iteration).
        ValueError: a checkpoint that does not match ``config`` (or was written by another
            number of processes), or ``resume`` without one.
    """
    ctx = init_from_env(config.device)
    try:
        return _train(config, Path(out_dir), resume, progress, log, ctx)
    finally:
        ctx.close()


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool | None,
    log: Callable[[str], None] | None,
    ctx: DistributedContext,
) -> dict[str, Any]:
    main = ctx.is_main()
    say = (log if main else None) or (lambda _msg: None)
    ckpt_path = out / CHECKPOINT
    state = None
    if resume:
        state = _load_resume_state(ckpt_path, config, ctx)
    device = ctx.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")

    teacher, meta = load_teacher(config.model, config.weights)
    teacher = teacher.to(device)
    test = _eval_set(config)
    shape = _image_shape(test)
    num_classes = int(
        meta.get("num_classes") or teacher(torch.zeros(1, *shape, device=device)).shape[1]
    )

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    data_rng = torch.Generator().manual_seed(rank_seed(config.seed, ctx.rank))
    perturbation_rng = torch.Generator().manual_seed(rank_seed(config.seed + 1_000_003, ctx.rank))
    student = build_student(
        teacher,
        task=config.task,
        student=config.student,
        num_classes=num_classes,
        in_channels=shape[0],
        image_size=shape[1],
        sparsity=config.sparsity,
        structured=config.structured,
        w_bits=config.w_bits,
        a_bits=config.a_bits,
        first_last_bits=config.first_last_bits,
    ).to(device)
    # A copy of the teacher keeps its BatchNorm statistics (only the affine parameters train);
    # a fresh distillation student learns them from the synthesized batches.
    student.train(config.task == "distill")
    if ctx.distributed and config.global_batch_statistics and student.training:
        from risloss.distributed import convert_batchnorm

        student = convert_batchnorm(student)
    quantized = _is_quantized(student)
    source: ImageSource
    if config.method in ("ris", "gdfq"):
        source = GeneratorSource(
            teacher,
            method=config.method,
            ris=config.ris,
            num_classes=num_classes,
            shape=shape,
            batch_size=config.batch_size,
            lr=config.lr_generator,
            rng=data_rng,
            perturbation_rng=perturbation_rng,
            device=device,
            context=ctx,
            global_batch_statistics=config.global_batch_statistics,
        )
    elif config.method == "noise":
        source = NoiseSource(teacher, shape, config.batch_size, data_rng, device)
    else:
        source = RealSource(
            teacher, load_dataset(config.data, "train"), config.batch_size, data_rng, device
        )
    optimizer = torch.optim.SGD(
        [p for p in student.parameters() if p.requires_grad],
        lr=config.lr_student,
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    qat_steps = max(config.iters - config.warmup, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, qat_steps) / qat_steps))
    )
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    start = 0
    if state is not None:
        student.load_state_dict(state["student"])
        source.load_state_dict(state["source"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng_state = state["rank_rng"][ctx.rank] if ctx.distributed else state
        data_rng.set_state(rng_state["data_rng"])
        perturbation_rng.set_state(rng_state["perturbation_rng"])
        torch.set_rng_state(rng_state["torch_rng"])
        history, evals, start = state["history"], state["evals"], int(state["iteration"])
        say(f"resumed from {ckpt_path} at iteration {start}")
    student_step: nn.Module = student
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        student_step = DistributedDataParallel(
            student, device_ids=[device] if device.type == "cuda" else None
        )

    def save(iteration: int) -> None:
        extra: dict[str, Any] = {}
        if ctx.distributed:
            import torch.distributed as dist

            mine = {
                "data_rng": data_rng.get_state(),
                "perturbation_rng": perturbation_rng.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            every: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(every, mine)
            extra = {"world_size": ctx.world_size, "rank_rng": every}
        if not main:
            return
        atomic_save(
            {
                "config": config.to_dict(),
                "iteration": iteration,
                "student": student.state_dict(),
                "source": source.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_rng": data_rng.get_state(),
                "perturbation_rng": perturbation_rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "evals": evals,
                **extra,
            },
            ckpt_path,
        )

    def calibrate(images: torch.Tensor) -> None:
        from risloss.quant import calibration

        with torch.no_grad(), calibration(student):
            if ctx.distributed:
                # Every rank observes the whole global batch: identical ranges everywhere,
                # equal to a single process calibrating on the concatenated batch.
                from risloss.distributed import all_gather_differentiable, local_batch_statistics

                with local_batch_statistics(student):
                    student(all_gather_differentiable(images))
            else:
                student(images)

    if main:
        out.mkdir(parents=True, exist_ok=True)
    bar = Progress(
        config.iters,
        start=start,
        desc=f"{config.task}/{config.method}",
        enabled=progress if main else False,
    )
    t0 = time.monotonic()
    stop = False
    with _interruptible(grace=5.0 if ctx.distributed else 0.0) as interrupted:
        for it in range(start, config.iters):
            batch = source.next_batch(train=True)
            parts = dict(batch.parts)
            if it < config.warmup:
                if quantized:
                    calibrate(batch.images)
            else:
                if quantized and it == config.warmup:
                    from risloss.quant import freeze

                    if config.warmup == 0:  # calibrate on the first batch at least
                        calibrate(batch.images)
                    freeze(student)
                s_logits = student_step(batch.images)
                s_kd = kd_loss(s_logits, batch.teacher_logits, config.kd_temperature)
                loss = config.kd_weight * s_kd
                parts["s_kd"] = float(s_kd.detach())
                if batch.labels is not None and config.ce_weight > 0:
                    s_ce = soft_cross_entropy(s_logits, batch.labels)
                    loss = loss + config.ce_weight * s_ce
                    parts["s_ce"] = float(s_ce.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                parts["s_loss"] = float(loss.detach())
                parts["lr"] = optimizer.param_groups[0]["lr"]
            parts["iter"] = it + 1
            if ctx.distributed:  # the global batch's losses; all ranks stop together
                stop = _reduce_parts(parts, interrupted(), ctx)
            history.append(parts)
            done = it + 1
            if config.eval_every and done % config.eval_every == 0 and done < config.iters:
                evals.append({"iter": done, "top1": _evaluate(student, test, ctx)})
            bar.update(done, {k: v for k, v in parts.items() if k in ("g_loss", "s_loss")})
            if done % config.checkpoint_every == 0 or done == config.iters:
                save(done)
            if (stop if ctx.distributed else interrupted()) and done < config.iters:
                save(done)
                bar.close()
                ctx.barrier()  # the checkpoint is on disk before any rank reports it
                raise TrainingInterrupted(ckpt_path, done)
    bar.close()
    if quantized and config.warmup >= config.iters:
        from risloss.quant import freeze

        freeze(student)  # post-training quantization: calibration only
    train_seconds = time.monotonic() - t0

    fp_top1 = _evaluate(teacher, test, ctx)
    top1 = _evaluate(student, test, ctx)
    metrics: dict[str, Any] = {
        "config": config.to_dict(),
        "fp_top1": fp_top1,
        "student_top1": top1,
        "train_seconds": train_seconds,
        "num_test_images": len(test),
        "evals": [*evals, {"iter": config.iters, "top1": top1}],
        "history": history,
        "torch_version": torch.__version__,
    }
    if quantized:
        metrics["quant_top1"] = top1
    if ctx.distributed:
        metrics["world_size"] = ctx.world_size
        metrics["global_batch_size"] = ctx.world_size * config.batch_size
    metrics.update(_compression_metrics(config, teacher, student, shape))
    if config.task == "prune":
        from risloss.pruning import finalize_pruning

        # Last use of the student: make the masks permanent, so student.pt holds plain
        # weights (checkpoint.pt keeps weight_orig and weight_mask for resuming).
        finalize_pruning(student)
    if main:
        _write_outputs(config, metrics, student, source, num_classes, out)
    ctx.barrier()  # the outputs are written before train() returns on any rank
    return metrics


def _write_outputs(
    config: TrainConfig,
    metrics: dict[str, Any],
    student: nn.Module,
    source: ImageSource,
    num_classes: int,
    out: Path,
) -> None:
    history = metrics["history"]
    atomic_save(student.state_dict(), out / "student.pt")
    if isinstance(source, GeneratorSource):
        atomic_save(source.generator.state_dict(), out / "generator.pt")
        from risloss.training._plots import save_samples

        save_samples(source.generator, num_classes, out / "samples.png", seed=config.seed)
    from risloss.training._plots import save_loss_plot

    save_loss_plot(history, out / "losses.png")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, out / "metrics.json")
