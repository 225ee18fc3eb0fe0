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
def _interruptible() -> Iterator[Callable[[], bool]]:
    """Turn SIGINT/SIGTERM into a flag checked between iterations (main thread only)."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:  # a second signal: stop at once
            raise KeyboardInterrupt
        received.append(signum)

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
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint.
        ValueError: a checkpoint that does not match ``config``, or ``resume`` without one.
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise ValueError(f"resume: no checkpoint at {ckpt_path}")
        state = load_checkpoint(ckpt_path)
        saved = state["config"]
        if saved != config.to_dict():
            diff = sorted(k for k in saved if saved[k] != config.to_dict().get(k))
            raise ValueError(f"resume: the checkpoint was made with other settings ({diff})")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")

    teacher, meta = load_teacher(config.model, config.weights)
    teacher = teacher.to(device)
    test = _eval_set(config)
    shape = _image_shape(test)
    num_classes = int(
        meta.get("num_classes") or teacher(torch.zeros(1, *shape, device=device)).shape[1]
    )

    torch.manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed)
    perturbation_rng = torch.Generator().manual_seed(config.seed + 1_000_003)
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
        data_rng.set_state(state["data_rng"])
        perturbation_rng.set_state(state["perturbation_rng"])
        torch.set_rng_state(state["torch_rng"])
        history, evals, start = state["history"], state["evals"], int(state["iteration"])
        say(f"resumed from {ckpt_path} at iteration {start}")

    def save(iteration: int) -> None:
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
            },
            ckpt_path,
        )

    out.mkdir(parents=True, exist_ok=True)
    bar = Progress(
        config.iters, start=start, desc=f"{config.task}/{config.method}", enabled=progress
    )
    t0 = time.monotonic()
    with _interruptible() as interrupted:
        for it in range(start, config.iters):
            batch = source.next_batch(train=True)
            parts = dict(batch.parts)
            if it < config.warmup:
                if quantized:
                    from risloss.quant import calibration

                    with torch.no_grad(), calibration(student):
                        student(batch.images)
            else:
                if quantized and it == config.warmup:
                    from risloss.quant import calibration, freeze

                    if config.warmup == 0:  # calibrate on the first batch at least
                        with torch.no_grad(), calibration(student):
                            student(batch.images)
                    freeze(student)
                s_logits = student(batch.images)
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
            history.append(parts)
            done = it + 1
            if config.eval_every and done % config.eval_every == 0 and done < config.iters:
                evals.append({"iter": done, "top1": evaluate(student, test)})
            bar.update(done, {k: v for k, v in parts.items() if k in ("g_loss", "s_loss")})
            if done % config.checkpoint_every == 0 or done == config.iters:
                save(done)
            if interrupted() and done < config.iters:
                save(done)
                bar.close()
                raise TrainingInterrupted(ckpt_path, done)
    bar.close()
    if quantized and config.warmup >= config.iters:
        from risloss.quant import freeze

        freeze(student)  # post-training quantization: calibration only
    train_seconds = time.monotonic() - t0

    fp_top1 = evaluate(teacher, test)
    top1 = evaluate(student, test)
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
    metrics.update(_compression_metrics(config, teacher, student, shape))
    if config.task == "prune":
        from risloss.pruning import finalize_pruning

        # Last use of the student: make the masks permanent, so student.pt holds plain
        # weights (checkpoint.pt keeps weight_orig and weight_mask for resuming).
        finalize_pruning(student)
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
    return metrics
