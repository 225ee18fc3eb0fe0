"""The data-free training loop shared by quantization, distillation and pruning.

A run is a few named steps: :func:`_setup` builds everything a run holds (:class:`_Run`),
:meth:`_Run.restore` continues a checkpoint, :class:`_QuantPolicy` decides when activation
ranges are calibrated and frozen, :meth:`_Run.step` takes one iteration, :meth:`_Run.save`
writes the checkpoint and :func:`_write_outputs` the results. The differences of a
data-parallel run live behind :class:`~risloss.distributed.DistributedContext`'s methods.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import torch
from torch import nn
from torch.utils.data import Subset

from risloss._checkpoint import atomic_save, load_checkpoint
from risloss.data import check_compatible, load_dataset
from risloss.distributed import (
    DistributedContext,
    convert_batchnorm,
    init_from_env,
    local_batch_statistics,
    rank_seed,
)
from risloss.functional import kd_loss, soft_cross_entropy
from risloss.perturb import default_input_perturbation
from risloss.pruning import finalize_pruning, model_stats
from risloss.quant import calibration, freeze, quantized_layers
from risloss.training._config import TrainConfig
from risloss.training._models import build_student, data_options, input_range_of, load_teacher
from risloss.training._plots import save_loss_plot, save_samples
from risloss.training._progress import Progress
from risloss.training._replay import ReplayPool
from risloss.training._sources import (
    GeneratorSource,
    ImageSource,
    NoiseSource,
    RealSource,
)

__all__ = ["TrainingInterrupted", "kd_loss", "train"]

CHECKPOINT = "checkpoint.pt"
SYNTHESIS_WINDOW = 10
"""The synthesis figures of ``metrics.json`` are means over this many final iterations."""


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

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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


def _eval_set(config: TrainConfig, meta: dict[str, Any]) -> Any:
    size, norm = data_options(config.data, config.image_size, config.normalize, meta)
    test = load_dataset(config.data, "test", image_size=size, normalize=norm)
    if config.eval_limit is not None and config.eval_limit < len(test):  # type: ignore[arg-type]
        test = Subset(test, range(config.eval_limit))
    return test


def _image_shape(dataset: Any) -> tuple[int, int, int]:
    x = dataset[0][0]
    if x.ndim != 3:
        raise ValueError(f"expected (C, H, W) images, the data set yields {tuple(x.shape)}")
    return (int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))


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
    state, error = ctx.from_main((state, error))
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


@attrs.define
class _QuantPolicy:
    """When a quantized student's activation ranges are calibrated and frozen.

    Warm-up iterations calibrate on each batch (EMA of its ranges); the first student
    iteration freezes the ranges (calibrating on its batch first when there is no warm-up);
    a run that is all warm-up (post-training quantization) freezes at the end.
    """

    student: nn.Module
    ctx: DistributedContext
    warmup: int
    iters: int
    active: bool

    def before_iteration(self, it: int, images: torch.Tensor) -> None:
        if not self.active:
            return
        if it < self.warmup or (it == 0 and self.warmup == 0):
            self._calibrate(images)
        if it == self.warmup:
            freeze(self.student)

    def finish(self) -> None:
        if self.active and self.warmup >= self.iters:
            freeze(self.student)  # post-training quantization: calibration only

    def _calibrate(self, images: torch.Tensor) -> None:
        # In a distributed run every rank observes the whole global batch: identical ranges
        # everywhere, equal to a single process calibrating on the concatenated batch.
        with (
            torch.no_grad(),
            calibration(self.student),
            local_batch_statistics(self.student),
        ):
            self.student(self.ctx.gather(images))


@attrs.define(eq=False)
class _Run:
    """Everything one run holds between iterations."""

    config: TrainConfig
    ctx: DistributedContext
    ckpt_path: Path
    teacher: nn.Module
    test: Any
    shape: tuple[int, int, int]
    num_classes: int
    student: nn.Module
    source: ImageSource
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    data_rng: torch.Generator
    perturbation_rng: torch.Generator
    quant: _QuantPolicy
    augment: nn.Module | None = None
    replay: ReplayPool | None = None
    student_step: nn.Module = attrs.field(init=False)
    history: list[dict[str, float]] = attrs.field(factory=list)
    evals: list[dict[str, float]] = attrs.field(factory=list)
    start: int = 0

    def __attrs_post_init__(self) -> None:
        self.student_step = self.ctx.wrap(self.student)

    def _rng_states(self) -> dict[str, torch.Tensor]:
        return {
            "data_rng": self.data_rng.get_state(),
            "perturbation_rng": self.perturbation_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, iteration: int) -> None:
        """Write the checkpoint atomically (rank 0; every rank's random state with it)."""
        every = self.ctx.all_objects(self._rng_states())  # a collective: all ranks call it
        if not self.ctx.is_main():
            return
        extra: dict[str, Any] = {}
        if self.ctx.distributed:
            extra = {"world_size": self.ctx.world_size, "rank_rng": every}
        atomic_save(
            {
                "config": self.config.to_dict(),
                "iteration": iteration,
                "student": self.student.state_dict(),
                "source": self.source.state_dict(),
                **({} if self.replay is None else {"replay": self.replay.state_dict()}),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                **self._rng_states(),
                "history": self.history,
                "evals": self.evals,
                **extra,
            },
            self.ckpt_path,
        )

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        self.student.load_state_dict(state["student"])
        self.source.load_state_dict(state["source"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng_state = state["rank_rng"][self.ctx.rank] if self.ctx.distributed else state
        self.data_rng.set_state(rng_state["data_rng"])
        self.perturbation_rng.set_state(rng_state["perturbation_rng"])
        torch.set_rng_state(rng_state["torch_rng"])
        self.history, self.evals = state["history"], state["evals"]
        self.start = int(state["iteration"])

    def _adversary(self, images: torch.Tensor) -> torch.Tensor:
        """The student's logits of ``images``, differentiable with respect to the images only:
        its parameters are detached and its buffers (BatchNorm running statistics, activation
        ranges) copied, so this pass neither trains nor changes the student."""
        student = self.student
        params = {n: p.detach() for n, p in student.named_parameters()}
        buffers = {n: b.clone() for n, b in student.named_buffers()}
        out: torch.Tensor = torch.func.functional_call(student, (params, buffers), (images,))
        return out

    def step(self, it: int) -> dict[str, float]:
        """One iteration: a batch (and a generator step), then the student's steps after
        warm-up (``student_steps``: the first on the batch, the others on the replay pool or
        the batch again).

        Returns:
            The iteration's record: the source's parts, the student's losses (means over its
            steps) and ``lr``.
        """
        config = self.config
        adversarial = it >= config.warmup and config.adversarial_weight > 0
        batch = self.source.next_batch(adversary=self._adversary if adversarial else None)
        record = dict(batch.parts)
        self.quant.before_iteration(it, batch.images)
        if it < config.warmup:
            return record
        if self.replay is not None:
            self.replay.add(batch.images, batch.teacher_logits, batch.labels)
        sums: dict[str, float] = {}
        for k in range(config.student_steps):
            if k == 0 or self.replay is None:
                images, target, labels = batch.images, batch.teacher_logits, batch.labels
            else:
                images, target, labels = self.replay.sample(config.batch_size, self.data_rng)
            for name, value in self._student_step(images, target, labels).items():
                sums[name] = sums.get(name, 0.0) + value
        record.update({name: total / config.student_steps for name, total in sums.items()})
        self.scheduler.step()
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        return record

    def _student_step(
        self, images: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, float]:
        """One optimizer step of the student on a batch; its losses by name."""
        config = self.config
        if self.augment is not None:
            with torch.no_grad():
                images = self.augment(images, self.data_rng)
                target = self.teacher(images)
        s_logits = self.student_step(images)
        s_kd = kd_loss(s_logits, target, config.kd_temperature)
        loss = config.kd_weight * s_kd
        parts = {"s_kd": float(s_kd.detach())}
        if labels is not None and config.ce_weight > 0:
            s_ce = soft_cross_entropy(s_logits, labels)
            loss = loss + config.ce_weight * s_ce
            parts["s_ce"] = float(s_ce.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        parts["s_loss"] = float(loss.detach())
        return parts

    def evaluate(self, model: nn.Module) -> float:
        return self.ctx.evaluate(model, self.test)


def _teacher_and_test(
    config: TrainConfig, device: torch.device
) -> tuple[nn.Module, dict[str, Any], Any, tuple[int, int, int], int]:
    """The teacher (on ``device``), its metadata, the checked test set, image shape, classes."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    teacher, meta = load_teacher(config.model, config.weights)
    teacher = teacher.to(device)
    test = _eval_set(config, meta)
    check_compatible(teacher, test, input_shape=meta.get("input_shape"))
    shape = _image_shape(test)
    num_classes = int(
        meta.get("num_classes") or teacher(torch.zeros(1, *shape, device=device)).shape[1]
    )
    return teacher, meta, test, shape, num_classes


def _generator_source(
    config: TrainConfig,
    teacher: nn.Module,
    *,
    num_classes: int,
    shape: tuple[int, int, int],
    data_rng: torch.Generator,
    perturbation_rng: torch.Generator,
    ctx: DistributedContext,
    meta: dict[str, Any] | None = None,
) -> GeneratorSource:
    """The generator, its optimizer and objective, as ``config`` describes them (``meta``: the
    teacher's recorded metadata, for ``input_range="auto"``)."""
    bounds = input_range_of(config.input_range, config.data, config.normalize, meta or {}, shape[0])
    return GeneratorSource(
        teacher,
        method=config.method,
        ris=config.ris,
        num_classes=num_classes,
        shape=shape,
        batch_size=config.batch_size,
        lr=config.lr_generator,
        rng=data_rng,
        conditioning=config.generator_conditioning,
        output_lr_scale=config.generator_output_lr_scale,
        input_mean=config.input_mean,
        input_std=config.input_std,
        fit_input_statistics=config.fit_input_statistics,
        output_range=bounds,
        perturbation_rng=perturbation_rng,
        device=ctx.device,
        context=ctx,
        global_batch_statistics=config.global_batch_statistics,
        adversarial_weight=config.adversarial_weight,
    )


def _setup(config: TrainConfig, ckpt_path: Path, ctx: DistributedContext) -> _Run:
    """Load the teacher and the test set, build the student, the image source and optimizers."""
    device = ctx.device
    teacher, meta, test, shape, num_classes = _teacher_and_test(config, device)

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
        student_init=config.student_init,
    ).to(device)
    # A copy of the teacher keeps its BatchNorm statistics (only the affine parameters train);
    # a fresh distillation student learns them from the synthesized batches.
    student.train(config.task == "distill")
    if ctx.distributed and config.global_batch_statistics and student.training:
        student = convert_batchnorm(student)
    source: ImageSource
    if config.method in ("ris", "gdfq"):
        source = _generator_source(
            config,
            teacher,
            num_classes=num_classes,
            shape=shape,
            data_rng=data_rng,
            perturbation_rng=perturbation_rng,
            ctx=ctx,
            meta=meta,
        )
    elif config.method == "noise":
        source = NoiseSource(teacher, shape, config.batch_size, data_rng, device)
    else:
        size, norm = data_options(config.data, config.image_size, config.normalize, meta)
        train_set = load_dataset(config.data, "train", image_size=size, normalize=norm)
        source = RealSource(teacher, train_set, config.batch_size, data_rng, device)
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
    quant = _QuantPolicy(
        student, ctx, config.warmup, config.iters, active=bool(quantized_layers(student))
    )
    return _Run(
        config=config,
        ctx=ctx,
        ckpt_path=ckpt_path,
        teacher=teacher,
        test=test,
        shape=shape,
        num_classes=num_classes,
        student=student,
        source=source,
        optimizer=optimizer,
        scheduler=scheduler,
        data_rng=data_rng,
        perturbation_rng=perturbation_rng,
        quant=quant,
        augment=(
            None
            if config.student_augmentation == "none"
            else default_input_perturbation(per_sample=True, pool=config.student_augmentation)
        ),
        replay=ReplayPool(config.replay_size) if config.replay_size else None,
    )


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
    state = _load_resume_state(ckpt_path, config, ctx) if resume else None
    run = _setup(config, ckpt_path, ctx)
    hint = input_range_hint(run.source, config)
    if hint:
        say(hint)
    if state is not None:
        run.restore(state)
        say(f"resumed from {ckpt_path} at iteration {run.start}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
    bar = Progress(
        config.iters,
        start=run.start,
        desc=f"{config.task}/{config.method}",
        enabled=progress if main else False,
    )
    t0 = time.monotonic()
    with _interruptible(grace=5.0 if ctx.distributed else 0.0) as interrupted:
        for it in range(run.start, config.iters):
            record = run.step(it)
            record["iter"] = it + 1
            ctx.average(record, skip=("iter", "lr"))  # distributed: the global batch's losses
            run.history.append(record)
            done = it + 1
            if config.eval_every and done % config.eval_every == 0 and done < config.iters:
                run.evals.append({"iter": done, "top1": run.evaluate(run.student)})
            bar.update(done, {k: v for k, v in record.items() if k in _SHOWN})
            if done % config.checkpoint_every == 0 or done == config.iters:
                run.save(done)
            if ctx.any(interrupted()) and done < config.iters:  # all ranks stop together
                run.save(done)
                bar.close()
                ctx.barrier()  # the checkpoint is on disk before any rank reports it
                raise TrainingInterrupted(ckpt_path, done)
    bar.close()
    run.quant.finish()
    metrics = _metrics(run, train_seconds=time.monotonic() - t0)
    if config.task == "prune":
        # Last use of the student: make the masks permanent, so student.pt holds plain
        # weights (checkpoint.pt keeps weight_orig and weight_mask for resuming).
        finalize_pruning(run.student)
    if main:
        _write_outputs(run, metrics, out)
    ctx.barrier()  # the outputs are written before train() returns on any rank
    return metrics


def input_range_hint(source: ImageSource, config: TrainConfig) -> str | None:
    """A one-line note when the teacher seems to expect images far from standardized ones.

    The generator starts with zero-mean, unit-variance images; if the teacher's first
    BatchNorm layer wants a scale outside ``[0.5, 2]`` or a shift beyond ``0.5`` per channel
    (a model that takes ``[0, 1]`` images and normalizes them itself), the run still adapts,
    but starting there (``fit_input_statistics``) is measurably better.

    Returns:
        The note, or ``None`` (statistics declared or fitted, or close to standardized).
    """
    if not isinstance(source, GeneratorSource) or config.fit_input_statistics:
        return None
    fitted = source.fitted_input_statistics
    if fitted is None:
        return None
    scale, shift = fitted
    if bool(((scale >= 0.5) & (scale <= 2.0) & (shift.abs() <= 0.5)).all()):
        return None
    fmt = ", ".join
    return (
        "note: the model's first BatchNorm layer expects inputs of about scale "
        f"[{fmt(f'{v:.2f}' for v in scale.tolist())}] and shift "
        f"[{fmt(f'{v:.2f}' for v in shift.tolist())}] per channel, not standardized ones; "
        "--fit-input-statistics (fit_input_statistics=True) starts the generator there"
    )


_SHOWN = ("g_loss", "g_agree", "s_loss")
"""The record entries the progress line shows."""


def synthesis_summary(
    history: list[dict[str, float]], window: int = SYNTHESIS_WINDOW
) -> dict[str, float]:
    """Means of the generator's figures over the last ``window`` iterations of a history.

    Args:
        history: per-iteration records (``metrics["history"]``).
        window: how many final iterations to average.

    Returns:
        ``{"g_agree": ..., "g_ce": ..., "g_bns": ..., "g_sim": ..., ...}`` for every ``g_``
        entry present in those iterations (empty for a run without a generator).

    Example:
        >>> from risloss.training._trainer import synthesis_summary
        >>> synthesis_summary([{"g_agree": 0.5}, {"g_agree": 1.0}], window=2)
        {'g_agree': 0.75}
    """
    tail = history[-window:]
    keys = [k for k in (tail[-1] if tail else {}) if k.startswith("g_")]
    return {k: sum(r[k] for r in tail if k in r) / sum(1 for r in tail if k in r) for k in keys}


def _metrics(run: _Run, *, train_seconds: float) -> dict[str, Any]:
    config, ctx = run.config, run.ctx
    top1 = run.evaluate(run.student)
    metrics: dict[str, Any] = {
        "config": config.to_dict(),
        "fp_top1": run.evaluate(run.teacher),
        "student_top1": top1,
        "train_seconds": train_seconds,
        "num_test_images": len(run.test),
        "evals": [*run.evals, {"iter": config.iters, "top1": top1}],
        "synthesis": synthesis_summary(run.history),
        "history": run.history,
        "torch_version": torch.__version__,
    }
    if run.quant.active:
        metrics["quant_top1"] = top1
    if ctx.distributed:
        metrics["world_size"] = ctx.world_size
        metrics["global_batch_size"] = ctx.world_size * config.batch_size
    if config.task in ("prune", "distill"):  # what the compression changed
        before, after = model_stats(run.teacher, run.shape), model_stats(run.student, run.shape)
        if config.task == "prune":
            metrics["prune"] = {
                "target_sparsity": config.sparsity,
                "structured": config.structured,
                "before": before,
                "after": after,
            }
        else:
            metrics["distill"] = {"arch": config.student, "teacher": before, "student": after}
    return metrics


def _write_outputs(run: _Run, metrics: dict[str, Any], out: Path) -> None:
    atomic_save(run.student.state_dict(), out / "student.pt")
    if isinstance(run.source, GeneratorSource):
        atomic_save(run.source.generator.state_dict(), out / "generator.pt")
        save_samples(
            run.source.generator, run.num_classes, out / "samples.png", seed=run.config.seed
        )
    save_loss_plot(metrics["history"], out / "losses.png")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, out / "metrics.json")
