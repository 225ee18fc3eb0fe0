"""The compression job (quantization, distillation, pruning) on synthesized images, and
:func:`train`, which runs it with :func:`~risloss.training.run_loop`."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset

from risloss._checkpoint import atomic_save
from risloss._datacheck import check_dataset
from risloss._resources import OPTION_NAMES, check_disk, check_memory
from risloss._util import machine_info
from risloss.data import DataFileError
from risloss.distributed import DistributedContext, convert_batchnorm, local_batch_statistics
from risloss.functional import kd_loss, soft_cross_entropy
from risloss.perturb import CutMix, MixUp, default_input_perturbation
from risloss.pruning import finalize_pruning, model_stats
from risloss.quant import calibration, freeze, quantized_layers
from risloss.training._config import TrainConfig
from risloss.training._inputs import Inputs, check_data_argument, generator_source
from risloss.training._models import build_student, describe_object
from risloss.training._plots import save_samples
from risloss.training._replay import ReplayPool
from risloss.training._run import Run, TrainingInterrupted, run_loop, synthesis_summary
from risloss.training._sources import GeneratorSource, ImageSource, NoiseSource, RealSource

__all__ = ["TrainJob", "TrainingInterrupted", "check_fit", "kd_loss", "train"]

_FIELD_NAMES = {name: name for name in OPTION_NAMES}


def check_fit(
    config: TrainConfig,
    shape: tuple[int, ...],
    num_classes: int,
    out: os.PathLike[str] | str,
    *,
    num_images: int = 0,
) -> None:
    """Refuse, before any training, a run whose big buffers cannot fit the memory available
    (the replay pool, a batch through the generator, the images a synthesis draws), or whose
    checkpoints cannot fit the disk of ``out`` (see :mod:`risloss._resources`).

    Raises:
        ValueError: one line starting with the setting to change (``replay_size 10000000:
            ...``).
    """
    image_size = config.image_size
    sized = isinstance(image_size, int) and not isinstance(image_size, bool)
    replay = _replay_capacity(config, shape, num_classes) if num_images == 0 else 0
    if num_images == 0 and config.replay_size and config.student_steps > 1:
        if replay < config.batch_size:
            size = "x".join(str(int(v)) for v in shape)
            raise ValueError(
                f"replay_memory_mb {config.replay_memory_mb:g}: the replay pool then holds "
                f"{replay} images of {size} ({ReplayPool.image_bytes(shape, num_classes)} bytes "
                f"each with their logits and labels), fewer than one batch of "
                f"{config.batch_size}; raise it to at least "
                f"{_mb_for(config.batch_size, shape, num_classes):g}, or use one student step"
            )
    need = check_memory(
        image_shape=tuple(int(v) for v in shape),
        num_classes=num_classes,
        batch_size=config.batch_size,
        replay_size=replay,
        num_images=num_images,
        generator=config.method in ("ris", "gdfq"),
        image_size=int(image_size) if sized else None,  # type: ignore[arg-type]
        device=config.device,
        names=_FIELD_NAMES,
    )
    check_disk(out, need, replay_size=replay, names=_FIELD_NAMES)


def _replay_capacity(config: TrainConfig, shape: tuple[int, ...], num_classes: int) -> int:
    """The images a run's replay pool keeps: ``replay_size`` capped by ``replay_memory_mb``
    (:meth:`ReplayPool.capacity_for`) for images of ``shape`` and ``num_classes`` classes."""
    return ReplayPool.capacity_for(
        config.replay_size, config.replay_memory_mb, tuple(shape), num_classes
    )


def _mb_for(images: int, shape: tuple[int, ...], num_classes: int) -> float:
    """The budget in megabytes (rounded up to 0.01) that holds ``images`` images."""
    return math.ceil(images * ReplayPool.image_bytes(shape, num_classes) / 2**20 * 100) / 100


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


class TrainJob:
    """One data-free compression job: a student trained on synthesized images to match the
    teacher (a :class:`~risloss.training.Job` that :func:`train` runs).

    One job serves the three tasks of :class:`TrainConfig`; only the student differs:

    - ``task="quantize"``: a fake-quantized copy of the teacher (``w_bits``/``a_bits``);
    - ``task="distill"``: a fresh, smaller network (``student="resnet8"``), optionally quantized;
    - ``task="prune"``: a copy of the teacher pruned by :func:`risloss.pruning.prune_model`
      (``sparsity``, ``structured``), optionally quantized; unstructured masks stay in place
      while it trains, so pruned weights stay zero.

    Each iteration draws a batch from the image source (``method``): a generator step on the
    generator's objective (``ris``, ``gdfq``), Gaussian noise or real training images.
    Warm-up iterations (``warmup``) train only the generator and calibrate the activation
    ranges of a quantized student on its images; the first later iteration freezes the ranges.
    After warm-up every iteration takes ``student_steps`` optimizer steps of the student (by
    default 4 for ``quantize``, 1 for ``prune`` and ``distill``): the first on the iteration's
    batch, the others on batches drawn from a pool of the last ``replay_size`` synthesized
    images (4,096 for ``quantize``), or on the batch again without a pool; the learning rate
    follows a cosine schedule that advances once per iteration. Each student step minimizes
    ``kd_weight * T^2 * KL(teacher || student) + ce_weight * CE`` on the batch, or on a view
    of it perturbed per sample (``student_augmentation``, the default of ``distill``)
    labelled by the teacher. With ``adversarial_weight > 0`` the generator step also maximizes
    the student's divergence from the teacher (:meth:`adversary`). A copy of the teacher
    (quantize, prune) trains in eval mode: its BatchNorm statistics stay fixed and only their
    affine parameters train. A distillation student starts from scratch and trains in train
    mode, so its BatchNorm layers learn the statistics of the synthesized images.

    Outputs (:meth:`outputs`): ``student.pt`` (state dict), ``generator.pt`` (generator
    methods), ``samples.png`` (a row per class), and through the :class:`~risloss.training.Run`
    ``losses.png``, ``checkpoint.pt`` and ``metrics.json``: the configuration, ``fp_top1``
    (teacher), ``student_top1`` (the trained model, every task), ``quant_top1`` (the same
    number, only when the student is quantized), the evaluations and per-iteration loss
    components, ``input_spec`` (the :class:`~risloss.data.InputSpec` of the run), ``objects``
    (the class of each argument given as an object) and :func:`risloss.pruning.model_stats`
    (``params``, ``nonzero_params``, ``macs``, ``effective_macs``, ``sparsity``) of both
    models: under ``prune`` as ``{"before": teacher, "after": student, ...}``, under
    ``distill`` as ``{"arch": ..., "teacher": ..., "student": ...}``.

    ``student.pt`` holds plain weights: pruning masks are made permanent with
    :func:`risloss.pruning.finalize_pruning` (``checkpoint.pt`` keeps them, for resuming). To
    load it, rebuild the student the same way: ``resnet8(...)`` for distillation,
    ``prune_model(teacher, sparsity=s, structured=True)`` for structured pruning (the kept
    channels follow from the teacher's weights), then :func:`risloss.quant.quantize_model` if
    the run quantized.

    In a data-parallel run (``torchrun``, see :mod:`risloss.distributed`) ``batch_size`` is
    the batch of each process, the generator and the student train under
    DistributedDataParallel, rank ``r`` draws its images from seed
    :func:`risloss.distributed.rank_seed` ``(seed, r)``, the correlation penalty covers the
    global batch, and with ``global_batch_statistics`` so do the BatchNorm statistics (the
    generator's, a distillation student's and the BNS loss's). Activation ranges are
    calibrated on the gathered global batch, identically on every rank. ``metrics.json`` then
    also records ``world_size`` and ``global_batch_size``.

    Args:
        config: the run.
        model: the teacher as an object (a copy of it is used; ``config.model`` and
            ``config.weights`` are then not read). ``None``: ``config.model``.
        test_data: the evaluation data as a ``Dataset`` of ``(image, label)`` pairs, used as
            it is (``config.normalize`` then says how its images are normalized).
            ``None``: ``config.data``'s test split.
        train_data: the training data of ``method="real"`` as a ``Dataset``, used as it is.
            ``None``: ``config.data``'s training split (required with ``test_data``).

    Attributes:
        config: as given.
        teacher: the teacher (eval mode, frozen), set by :meth:`prepare`.
        test: the test data, set by :meth:`prepare`.
        spec: the :class:`~risloss.data.InputSpec` of the run, set by :meth:`prepare`.
        num_classes: the number of classes, set by :meth:`prepare`.
        student: the trained model, set by :meth:`build`.
        source: the image source (a generator, noise or real data), set by :meth:`build`.
        optimizer: the student's SGD optimizer, set by :meth:`build`.
        scheduler: its cosine learning-rate schedule, set by :meth:`build`.
        replay: the :class:`~risloss.training.ReplayPool` (``None`` without one).
        evals: the evaluations so far.

    Raises:
        TypeError: ``model`` not a module, ``test_data``/``train_data`` not data sets.
        ValueError: ``train_data`` without ``method="real"``, or ``method="real"`` with
            ``test_data`` but no ``train_data``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from risloss.models import resnet8
        >>> from risloss.training import Run, TrainConfig, TrainJob
        >>> net = resnet8(num_classes=2, in_channels=1, image_size=8)
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1] * 3))
        >>> config = TrainConfig(method="noise", iters=2, warmup=1, batch_size=4)
        >>> job = TrainJob(config, model=net, test_data=data)
        >>> run = Run(job, "runs/tiny", log=None)
        >>> run.setup()  # doctest: +SKIP
        >>> sorted(job.step(1))  # a student step  # doctest: +SKIP
        ['lr', 's_kd', 's_loss']
    """

    kind = "train"

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        test_data: Dataset | None = None,
        train_data: Dataset | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(
                "model must be a torch.nn.Module (a model given by name goes in "
                f"TrainConfig.model), got {type(model).__name__}"
            )
        check_data_argument(test_data, "test_data")
        check_data_argument(train_data, "train_data")
        if train_data is not None and config.method != "real":
            raise ValueError(
                f"train_data is read by method='real' only, got method={config.method!r}"
            )
        if config.method == "real" and test_data is not None and train_data is None:
            raise ValueError("method='real' with test_data given as an object needs train_data too")
        self.config = config
        self.label = f"{config.task}/{config.method}"
        self._model, self._test_data, self._train_data = model, test_data, train_data
        self.evals: list[dict[str, float]] = []
        self.replay: ReplayPool | None = None
        self.augment: nn.Module | None = None
        self.mix: MixUp | None = None
        self.cutmix: CutMix | None = None
        self.seconds = 0.0  # time in the iterations so far, evaluations left out
        self.teacher: nn.Module
        self.student: nn.Module
        self.source: ImageSource
        self.optimizer: torch.optim.Optimizer
        self.scheduler: torch.optim.lr_scheduler.LambdaLR

    def prepare(self, run: Run) -> None:
        """Load the teacher and the test data and check that they fit (nothing is written)."""
        self._ctx = run.context
        self.inputs = Inputs.resolve(
            self.config,
            run.context.device,
            model=self._model,
            test_data=self._test_data,
        )
        self.teacher, self.test = self.inputs.teacher, self.inputs.test
        self.spec, self.num_classes = self.inputs.spec, self.inputs.num_classes
        check_fit(self.config, self.spec.shape, self.num_classes, run.out)
        problem = check_dataset(self.test, self.num_classes)
        if problem is not None:
            raise DataFileError(problem)

    def build(self, run: Run) -> None:
        """The student, the image source, the optimizer and schedule, the replay pool."""
        config, ctx = self.config, run.context
        student = build_student(
            self.teacher,
            task=config.task,
            student=config.student,
            num_classes=self.num_classes,
            in_channels=self.spec.channels,
            image_size=self.spec.height,
            sparsity=config.sparsity,
            structured=config.structured,
            w_bits=config.w_bits,
            a_bits=config.a_bits,
            first_last_bits=config.first_last_bits,
            student_init=config.student_init,
        ).to(ctx.device)
        # A copy of the teacher keeps its BatchNorm statistics (only the affine parameters
        # train); a fresh distillation student learns them from the synthesized batches.
        student.train(config.task == "distill")
        if ctx.distributed and config.global_batch_statistics and student.training:
            student = convert_batchnorm(student)
        self.student = student
        self.source = self._image_source(run)
        self.optimizer = torch.optim.SGD(
            [p for p in student.parameters() if p.requires_grad],
            lr=config.lr_student,
            momentum=0.9,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
        qat_steps = max(config.iters - config.warmup, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, qat_steps) / qat_steps)),
        )
        self._quant = _QuantPolicy(
            student, ctx, config.warmup, config.iters, active=bool(quantized_layers(student))
        )
        if config.student_augmentation != "none":
            pool = config.student_augmentation
            self.augment = default_input_perturbation(per_sample=True, pool=pool)
        self.mix = MixUp(p=config.student_mixup) if config.student_mixup > 0 else None
        self.cutmix = CutMix(p=config.student_cutmix) if config.student_cutmix > 0 else None
        capacity = _replay_capacity(config, self.spec.shape, self.num_classes)
        self.replay = ReplayPool(capacity) if capacity else None
        if capacity < config.replay_size:
            run.say(
                f"replay pool: {capacity} images of {config.replay_size} "
                f"(replay_memory_mb={config.replay_memory_mb:g} holds no more)"
            )
        self._student_step_model = ctx.wrap(student)
        self._data_rng = run.data_rng

    def _image_source(self, run: Run) -> ImageSource:
        config, device = self.config, run.context.device
        if config.method in ("ris", "gdfq"):
            return generator_source(config, self.inputs, run)
        if config.method == "noise":
            return NoiseSource(
                self.teacher, self.spec.shape, config.batch_size, run.data_rng, device
            )
        given = self._train_data
        train_set = self.spec.load(config.data if given is None else given, "train")
        with torch.random.fork_rng(devices=[]):  # a data set's own draws leave the run's as is
            problem = check_dataset(train_set, self.num_classes, what="the training data")
        if problem is not None:
            raise DataFileError(problem)
        return RealSource(self.teacher, train_set, config.batch_size, run.data_rng, device)

    def state_dict(self) -> dict[str, Any]:
        """The student, the image source, the replay pool, the optimizer, the schedule and
        the evaluations so far."""
        return {
            "student": self.student.state_dict(),
            "source": self.source.state_dict(),
            **({} if self.replay is None else {"replay": self.replay.state_dict()}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "evals": self.evals,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint holding what :meth:`state_dict` wrote."""
        self.student.load_state_dict(state["student"])
        self.source.load_state_dict(state["source"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.evals = state["evals"]
        self.seconds = float(state.get("seconds", 0.0))  # absent from older checkpoints

    def adversary(self, images: torch.Tensor) -> torch.Tensor:
        """The student's logits of ``images``, differentiable with respect to the images only.

        The generator's adversarial term uses it: a functional call whose parameters are
        detached and whose buffers (BatchNorm running statistics, quantizer ranges) are
        copied, so this pass neither trains nor changes the student.
        """
        student = self.student
        params = {n: p.detach() for n, p in student.named_parameters()}
        buffers = {n: b.clone() for n, b in student.named_buffers()}
        out: torch.Tensor = torch.func.functional_call(student, (params, buffers), (images,))
        return out

    def step(self, it: int) -> dict[str, float]:
        """One iteration: a batch (and a generator step), then the student's steps after
        warm-up (``student_steps``: the first on the batch, the others on the replay pool or
        the batch again), then an evaluation every ``eval_every`` iterations.

        Returns:
            The iteration's record: the source's parts, the student's losses (means over its
            steps) and ``lr``.
        """
        config = self.config
        start = time.monotonic()
        adversarial = it >= config.warmup and config.adversarial_weight > 0
        batch = self.source.next_batch(adversary=self.adversary if adversarial else None)
        record = dict(batch.parts)
        self._quant.before_iteration(it, batch.images)
        if it >= config.warmup:
            record.update(self._student_steps(batch))
        done = it + 1
        self.seconds += time.monotonic() - start
        if config.eval_every and done % config.eval_every == 0 and done < config.iters:
            top1 = self._ctx.evaluate(self.student, self.test)
            self.evals.append({"iter": done, "top1": top1, "seconds": self.seconds})
        return record

    def _student_steps(self, batch: Any) -> dict[str, float]:
        config = self.config
        if self.replay is not None:
            self.replay.add(batch.images, batch.teacher_logits, batch.labels)
        sums: dict[str, float] = {}
        for k in range(config.student_steps):
            if self.replay is not None and config.student_batch_size is not None:
                # the pool regime: every step on a batch drawn from the whole pool
                images, target, labels = self.replay.sample(
                    config.student_batch_size, self._data_rng
                )
            elif k == 0 or self.replay is None:
                images, target, labels = batch.images, batch.teacher_logits, batch.labels
            else:
                images, target, labels = self.replay.sample(config.batch_size, self._data_rng)
            for name, value in self._student_step(images, target, labels).items():
                sums[name] = sums.get(name, 0.0) + value
        record = {name: total / config.student_steps for name, total in sums.items()}
        self.scheduler.step()
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        return record

    def _student_step(
        self, images: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, float]:
        """One optimizer step of the student on a batch; its losses by name."""
        config = self.config
        if self.augment is not None or self.mix is not None or self.cutmix is not None:
            with torch.no_grad():
                if self.augment is not None:
                    images = self.augment(images, self._data_rng)
                if self.mix is not None:
                    mixing = self.mix.sample(images, self._data_rng)
                    images = self.mix.transform(images, mixing)
                    # the labels are read by the cross-entropy term only
                    labels = (
                        _mixed_labels(labels, mixing.partner, mixing.weight, self.num_classes)
                        if config.ce_weight > 0
                        else None
                    )
                if self.cutmix is not None:
                    cut = self.cutmix.sample(images, self._data_rng)
                    images = self.cutmix.transform(images, cut)
                    kept = cut.kept_fraction(*images.shape[-2:])
                    labels = (
                        _mixed_labels(labels, cut.partner, kept, self.num_classes)
                        if config.ce_weight > 0
                        else None
                    )
                target = self.teacher(images)
        s_logits = self._student_step_model(images)
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

    def outputs(self, run: Run) -> dict[str, Any]:
        """Freeze a post-training quantizer's ranges, evaluate, make pruning masks permanent,
        write ``student.pt``, ``generator.pt`` and ``samples.png``; the metrics."""
        self._quant.finish()
        metrics = self._metrics(run)
        if self.config.task == "prune":
            # Last use of the student: make the masks permanent, so student.pt holds plain
            # weights (checkpoint.pt keeps weight_orig and weight_mask for resuming).
            finalize_pruning(self.student)
        if run.context.is_main():
            out = run.out
            atomic_save(self.student.state_dict(), out / "student.pt")
            if isinstance(self.source, GeneratorSource):
                generator = self.source.generator
                atomic_save(generator.state_dict(), out / "generator.pt")
                save_samples(
                    generator, self.num_classes, out / "samples.png", seed=self.config.seed
                )
        return metrics

    def _metrics(self, run: Run) -> dict[str, Any]:
        config, ctx = self.config, run.context
        top1 = ctx.evaluate(self.student, self.test)
        metrics: dict[str, Any] = {
            "config": config.to_dict(),
            "fp_top1": ctx.evaluate(self.teacher, self.test),
            "student_top1": top1,
            "train_seconds": run.train_seconds,
            "num_test_images": len(self.test),
            "evals": [*self.evals, {"iter": config.iters, "top1": top1, "seconds": self.seconds}],
            "synthesis": synthesis_summary(run.history),
            "history": run.history,
            "torch_version": torch.__version__,
            "machine": machine_info(),
        }
        if self._quant.active:
            metrics["quant_top1"] = top1
        if ctx.distributed:
            metrics["world_size"] = ctx.world_size
            metrics["global_batch_size"] = ctx.world_size * config.batch_size
        if config.task in ("prune", "distill"):  # what the compression changed
            shape = self.spec.shape
            before, after = model_stats(self.teacher, shape), model_stats(self.student, shape)
            if config.task == "prune":
                metrics["prune"] = {
                    "target_sparsity": config.sparsity,
                    "structured": config.structured,
                    "before": before,
                    "after": after,
                }
            else:
                metrics["distill"] = {"arch": config.student, "teacher": before, "student": after}
        if self.replay is not None:
            metrics["replay"] = {
                "capacity": self.replay.capacity,
                "bytes": self.replay.capacity
                * ReplayPool.image_bytes(self.spec.shape, self.num_classes),
            }
        metrics["input_spec"] = self.spec.to_dict()
        metrics["objects"] = dict(self.inputs.objects)
        if self._train_data is not None:
            metrics["objects"]["train_data"] = describe_object(self._train_data)
        return metrics


def _mixed_labels(
    labels: torch.Tensor | None, partner: torch.Tensor, kept: torch.Tensor, num_classes: int
) -> torch.Tensor | None:
    """The labels of images mixed by :class:`~risloss.perturb.MixUp` or
    :class:`~risloss.perturb.CutMix`: each image's class weights and its ``partner``'s, mixed
    at the share ``kept`` of the image itself (``None`` stays ``None``)."""
    if labels is None:
        return None
    if not labels.dtype.is_floating_point:
        labels = torch.nn.functional.one_hot(labels, num_classes).float()
    w = kept.to(labels.dtype).view(-1, 1)
    return w * labels + (1.0 - w) * labels[partner]


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    test_data: Dataset | None = None,
    train_data: Dataset | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run one data-free compression job and write its outputs to ``out_dir``.

    The job is a :class:`TrainJob` (its documentation says what each task trains and what the
    outputs hold) run by :func:`~risloss.training.run_loop`: ``config.iters`` iterations, each
    a generator step on a batch of synthesized images and, after ``config.warmup`` warm-up
    iterations, ``config.student_steps`` student optimizer steps (by default 4 for
    ``quantize``, three of them on a pool of past batches, and 1 for ``prune`` and
    ``distill``). It writes ``student.pt``, ``generator.pt``, ``samples.png``, ``losses.png``,
    ``checkpoint.pt`` and ``metrics.json`` (last).

    The teacher and the data come by name from ``config`` (``model``, ``weights``, ``data``)
    or as objects: ``model`` (an ``nn.Module`` holding its weights; a copy is used),
    ``test_data`` and, for ``method="real"``, ``train_data`` (``Dataset`` objects of
    ``(image, label)`` pairs, used as they are). ``metrics.json`` names the class of each
    object under ``objects``.

    Under ``torchrun --nproc_per_node=K`` the run is data-parallel over ``K`` processes
    (:mod:`risloss.distributed`): ``batch_size`` is the batch of each process; rank 0 writes
    every output and the checkpoint, which resumes only with the same number of processes.

    Example:
        >>> from risloss.training import TrainConfig, train
        >>> config = TrainConfig(task="prune", sparsity=0.5, w_bits=None, a_bits=None)
        >>> metrics = train(config, "runs/prune")  # doctest: +SKIP
        >>> metrics["prune"]["after"]["sparsity"]  # doctest: +SKIP
        0.5

    Args:
        config: the run.
        out_dir: output folder (created).
        model: the teacher as an object in place of ``config.model`` (see :class:`TrainJob`).
        test_data: a ``Dataset`` in place of ``config.data``'s test split.
        train_data: a ``Dataset`` in place of ``config.data``'s training split
            (``method="real"``).
        resume: continue from ``out_dir/checkpoint.pt``; the configuration must match (pass
            the same objects). On the CPU a resumed run ends bitwise equal to an uninterrupted
            one.
        progress: show a progress line (default: only on a terminal).
        log: where one-line messages go (``None``: silent).

    Returns:
        The metrics dictionary written to ``metrics.json``.

    Raises:
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint (in a distributed
            run every rank stops at the same iteration).
        ValueError: before any output: a model and data that do not fit (see
            :func:`risloss.data.check_compatible`), arguments that contradict the
            configuration; a checkpoint that does not match ``config`` (or was written by
            another number of processes), or ``resume`` without one.
        TypeError: an argument of the wrong type.
    """
    job = TrainJob(config, model=model, test_data=test_data, train_data=train_data)
    return run_loop(job, out_dir, resume=resume, progress=progress, log=log)
