"""Configuration of the data-free trainers (quantization, distillation, pruning)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

import attrs

from risloss._fields import default_of, inherit, setting
from risloss._validators import (
    Rule,
    boolean,
    channel_values,
    device_name,
    int_at_least,
    int_in,
    non_negative,
    number_in,
    one_of,
    optional,
    optional_bits,
)
from risloss.data import _image_size_option, _normalize_option, available_datasets
from risloss.models import (
    ARCHITECTURES,
    CONDITIONINGS,
    DEFAULT_TEACHER,
    OUTPUT_BOUNDS,
    Conditioning,
    OutputBound,
    list_pretrained,
)
from risloss.objective import RISConfig
from risloss.perturb import INPUT_POOLS, InputPool
from risloss.quant import QuantSpec

__all__ = [
    "METHODS",
    "STUDENTS",
    "TASKS",
    "Method",
    "RISConfig",
    "Task",
    "TrainConfig",
    "ris_for",
]

Method = Literal["ris", "gdfq", "noise", "real"]
"""Image sources: the full RIS objective, GDFQ's CE + BNS generator, Gaussian noise, real data."""
METHODS: tuple[str, ...] = get_args(Method)
"""The allowed values of ``TrainConfig.method``."""
Task = Literal["quantize", "distill", "prune"]
"""Compression tasks: a quantized copy of the teacher, a distilled student, a pruned copy."""
TASKS: tuple[str, ...] = get_args(Task)
"""The allowed values of ``TrainConfig.task``."""
StudentAugmentation = Literal["none", InputPool]
"""Augmentation of the student's batch: none, or a pool of
:func:`~risloss.perturb.default_input_perturbation`."""
STUDENT_AUGMENTATIONS: tuple[str, ...] = ("none", *INPUT_POOLS)
"""The allowed values of ``TrainConfig.student_augmentation``."""
STUDENTS: tuple[str, ...] = tuple(ARCHITECTURES)
"""The allowed values of ``TrainConfig.student``: the architectures of
:data:`risloss.models.ARCHITECTURES`."""
StudentInit = Literal["random", "teacher"]
"""How a distillation student starts: random weights, or the teacher's where names and shapes
match."""
STUDENT_INITS: tuple[str, ...] = get_args(StudentInit)
"""The allowed values of ``TrainConfig.student_init``."""


@attrs.frozen
class _Named(Rule):
    """A name from ``names()`` (read when checked), a ``"package.module:factory"``, or with
    ``folder``, ``"imagefolder:PATH"``; ``text`` words the known names."""

    names: Callable[[], Iterable[str]]
    text_of: Callable[[list[str]], str]
    folder: bool = False

    @property
    def text(self) -> str:
        return self.text_of(sorted(self.names()) if not self.folder else list(self.names()))

    def right_type(self, value: Any) -> bool:
        return isinstance(value, str)

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        if self.folder and value.startswith("imagefolder:"):
            return len(value) > len("imagefolder:")
        module, sep, factory = value.partition(":")
        return value in self.names() or bool(sep and module and factory)


teacher_name = _Named(
    list_pretrained,
    lambda shipped: f"one of the shipped teachers {shipped} or 'package.module:factory'",
)
"""A shipped teacher's name or ``"package.module:factory"`` (imported when a run starts)."""

dataset_name = _Named(
    available_datasets,
    lambda names: f"{', '.join(repr(n) for n in names[:-1])} or {names[-1]!r}",
    folder=True,
)
"""A data set :func:`risloss.data.load_dataset` knows: a shipped name, ``"imagefolder:PATH"``
or ``"package.module:factory"`` (whether it can be read is checked when a run starts)."""


# Ranges of the numeric fields: wide enough for any sensible run, narrow enough that a typo
# (1e30) fails here rather than as NaN in the middle of a run.
_LOSS_WEIGHT = number_in(0.0, 1000.0)
_LR = number_in(0.0, 10.0, open_low=True)
_STUDENT_LOSS = "student loss"
_student_loss = functools.partial(setting, commands=TASKS, group=_STUDENT_LOSS, metavar="X")
"""A setting of the student's loss: every training command takes it, under its own heading."""


def _bits(name: str, *, help: str) -> Any:
    """A bit width of the student, defaulting to :class:`~risloss.quant.QuantSpec`'s; distill
    and prune quantize only when asked to, so the command line's default is ``None`` there."""
    return setting(
        default_of(QuantSpec, name),
        validator=optional_bits,
        commands=TASKS,
        help=help,
        metavar="N",
        default_help="off",
        command_defaults={"distill": None, "prune": None},
    )


FitInputStatistics = bool | Literal["auto"]
"""Where the generator's output statistics start: ``True`` (fitted to the teacher),
``False`` (standardized) or ``"auto"`` (fitted where they are far from standardized)."""


def _fit_option(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is True or value is False or value == "auto":
        return
    raise ValueError(f"{attribute.name} must be True, False or 'auto', got {value!r}")


def _data_of(model: Any) -> str:
    """The default ``data`` of a configuration: a shipped teacher's own data set (its
    metadata's ``dataset``), else Fashion-MNIST."""
    from risloss.models import list_pretrained

    if isinstance(model, str):
        meta = list_pretrained().get(model)
        if meta is not None:
            return str(meta["dataset"])
    return "fashion-mnist"


def _optional_floats(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number or a sequence of numbers, got {value!r}") from None


InputRange = Literal["auto", "none"] | tuple[tuple[float, ...], tuple[float, ...]]
"""Where the generator's images may lie: ``"auto"`` (pixels in ``[0, 1]`` under the model's
normalization), ``"none"`` (unbounded) or per-channel ``(low, high)`` in the model's input space."""


def _input_range_option(value: Any) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """``value`` checked as an :data:`InputRange` (``ValueError`` naming the field otherwise)."""
    if value is None:
        return "none"
    if isinstance(value, str) and value in ("auto", "none"):
        return value
    problem = (
        "input_range must be 'auto', 'none' or (low, high), each one number or one per channel "
        f"with low < high, got {value!r}"
    )
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(problem)
    try:
        low, high = (_optional_floats(v) for v in value)
    except ValueError:
        raise ValueError(problem) from None
    if (
        not low
        or not high
        or len(low) != len(high)
        or not all(math.isfinite(v) for v in low + high)
        or not all(lo < hi for lo, hi in zip(low, high, strict=True))
    ):
        raise ValueError(problem)
    return low, high


# The generator objective's weights for every task: a BNS weight of 10 (the paper's 0.1 lets
# the images drift from the teacher's BatchNorm statistics) and a within-class feature-diversity
# weight of 10 (a class's images pushed apart in the teacher's features). Measured first for
# distillation, then for quantization and pruning on both data sets (the benchmark docs' section
# on the change of defaults): W3A3 and 80% pruning gain several points, W4A4 and 50% pruning
# are unchanged.
BNS_WEIGHT = 10.0
FEATURE_DIVERSITY_WEIGHT = 10.0
DISTILL_ITERS = 1500
DISTILL_ADVERSARIAL_WEIGHT = 1.0
DISTILL_MIXUP = 0.5
# A student trained from scratch: 1e-3 (the fine-tuning rate of quantize and prune) learns too
# slowly; 0.1 taught more than 0.05 at the 1,500-iteration default (benchmark docs).
DISTILL_LR_STUDENT = 0.1


def ris_for(task: str) -> RISConfig:
    """The default generator objective of ``task``: :class:`RISConfig`'s defaults with a BNS
    weight of 10 and a within-class feature-diversity weight of 10, for every task.

    :class:`RISConfig` alone keeps the paper's weights (BNS 0.1, no feature diversity), as a
    :class:`~risloss.RobustnessLoss` built inside another trainer expects; the trainer's tasks
    default to these heavier weights, measured better for a student trained from scratch, for
    W3A3 quantization and for 80% pruning, and no worse elsewhere (see the benchmark docs).

    Args:
        task: ``"quantize"``, ``"distill"`` or ``"prune"``.

    Example:
        >>> from risloss import RISConfig
        >>> from risloss.training import ris_for
        >>> RISConfig().bns_weight, ris_for("quantize").bns_weight, ris_for("distill").bns_weight
        (0.1, 10.0, 10.0)
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    return RISConfig(bns_weight=BNS_WEIGHT, feature_diversity_weight=FEATURE_DIVERSITY_WEIGHT)


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Everything that defines one data-free compression run; validated at construction.

    Attributes:
        task: ``"quantize"`` (fake-quantized copy of the teacher), ``"distill"`` (a smaller
            student) or ``"prune"`` (a pruned copy of the teacher, optionally quantized).
        method: image source: ``"ris"``, ``"gdfq"``, ``"noise"`` or ``"real"``.
        model: a shipped teacher name, or ``"package.module:factory"`` with ``weights``.
        weights: state-dict file for a ``package.module:factory`` model.
        data: data set name for evaluation (and for ``method="real"``), as
            :func:`risloss.data.load_dataset` names it. Default: a shipped teacher's own data
            set (``"cifar10"`` for ``resnet20_cifar10``), else ``"fashion-mnist"``.
        student: architecture of the distillation student, a name of
            :data:`risloss.models.ARCHITECTURES` (``"resnet8"`` or ``"resnet20"``).
        student_init: how a distillation student starts: ``"random"`` (the default, trained
            from scratch) or ``"teacher"``: every parameter and buffer whose name and shape
            match one of the teacher's is copied from it (for a ResNet-8 student of a ResNet-20
            teacher: the stem, the first block of each stage and the classifier), the rest
            stays random. ``task="distill"`` only.
        w_bits, a_bits: bit widths of weights and activations (``None``: no quantization;
            ``task="quantize"`` needs both).
        first_last_bits: keep the first conv and last linear at this width (``None``: as the rest).
        sparsity: fraction of weights (or channels, with ``structured``) pruned.
        structured: channel pruning of convolutions by L1 norm instead of unstructured magnitude.
        iters: total iterations, warm-up included; by default 300, and 1,500 for ``distill``
            (the pool regime: see ``student_batch_size``).
        warmup: first iterations that train only the generator (and calibrate activation
            ranges); by default a third of ``iters`` (100 of the default 300), a fifth for
            ``distill`` (300 of the default 1,500). The activation
            ranges are calibrated on the last warm-up batches, so the generator must have
            learned the classes by then: 100 warm-up iterations gave W3A3 2 to 4 points more than
            50 in the benchmark.
        batch_size: images per iteration.
        seed: seed of every random draw of the run.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        lr_generator: Adam learning rate of the generator (betas 0.5, 0.999).
        lr_student: SGD (Nesterov, momentum 0.9) learning rate of the student, cosine-decayed;
            by default 1e-3 for ``quantize`` and ``prune`` (fine-tuning the teacher's weights)
            and 0.1 for ``distill`` (a student trained from scratch: with 1e-3 it learns too
            slowly, and 0.1 taught more than 0.05; see the benchmark docs).
        weight_decay: student weight decay.
        kd_temperature: distillation temperature ``T``; by default 1 for ``quantize`` and
            ``prune`` and 4 for ``distill``: on confident synthesized images the teacher's
            logits at ``T=1`` are nearly one-hot, and a student trained from scratch learns
            more from their softened relative values (measured in the benchmark docs).
        kd_weight: weight of the ``T^2 * KL`` distillation term.
        ce_weight: weight of the student's cross-entropy on the batch labels.
        checkpoint_every: iterations between atomic checkpoints.
        eval_every: iterations between test evaluations during training (0: only at the end).
        eval_limit: evaluate on the first ``eval_limit`` test images only (``None``: all).
        ris: options of the generator objective (used by ``method="ris"``; ``"gdfq"`` uses
            only its ``bns_weight`` and ``feature_diversity_weight``). By default
            :func:`ris_for` ``(task)``: :class:`RISConfig`'s defaults with a BNS weight of 10
            and a within-class feature-diversity weight of 10 (measured in the benchmark docs:
            images closer to the teacher's BatchNorm statistics and more varied within a
            class). A ``RISConfig`` given here replaces that default as a whole; pass
            ``RISConfig()`` for the paper's weights (BNS 0.1, no feature diversity).
        generator_conditioning: how the generator takes its label: ``"concat"`` (the
            embedding concatenated to the noise; the default, it learns the classes many times
            faster) or ``"multiply"`` (GDFQ's; see :class:`~risloss.models.Generator`).
        generator_output_lr_scale: learning-rate multiple of the generator's output scale and
            shift (0 keeps them at their initial values).
        generator_output_bound: how the generator keeps its images to ``input_range``:
            ``"clamp"`` (the default, clipped) or ``"tanh"`` (squashed smoothly, so a pixel at
            the bound still gets a gradient; see :class:`~risloss.models.Generator`).
        input_mean, input_std: per-channel mean and standard deviation of the images the
            teacher expects, if known (for a teacher that takes ``[0, 1]`` images and normalizes
            them itself, roughly ``0.5`` and ``0.25``): the generator's output statistics start
            there. ``None``: zero mean and unit variance, the statistics of standardized data,
            which the generator then adapts to the teacher during training.
        fit_input_statistics: without declared ``input_mean``/``input_std``, where the
            generator's output statistics start. ``"auto"`` (the default): at the values
            :func:`~risloss.objective.fit_input_statistics` finds for the teacher (data-free:
            from its first BatchNorm layer's running statistics) when they are far from
            standardized images (:func:`~risloss.objective.is_standardized`: a teacher that
            takes ``[0, 1]`` images and normalizes them itself), else standardized. ``True``:
            always at the fitted values; ``False``: always standardized.
        input_range: where the generator's images may lie (they are clamped to it):
            ``"none"`` (unbounded, the default), ``"auto"`` (pixels in ``[0, 1]`` under the
            model's normalization: a shipped teacher's recorded one, ``normalize``, or the data
            set's default; unbounded where a data set from code leaves it unknown) or
            ``(low, high)`` in the model's input space, one number or one per channel each.
            ``distill`` defaults to ``"auto"``: images that hold only values real pixels can
            take teach a fresh student more (measured in the benchmark docs).
        student_augmentation: ``"none"``, or a pool of
            :func:`~risloss.perturb.default_input_perturbation` (``"all"``, ``"noise"``,
            ``"geometric"``, ``"photometric"``): the student trains on the batch perturbed by
            an operator drawn per sample, against the teacher's logits of the perturbed images
            (one more teacher pass, without gradients): many views of each synthesized image.
            By default ``"all"`` for ``distill`` (a student trained from scratch learns only
            what the images show it) and ``"none"`` for ``quantize`` and ``prune`` (a copy of
            the teacher, measured no better with it).
        adversarial_weight: weight of the adversarial term of the generator once the student
            trains: the generator also maximizes the student's divergence from the teacher on
            its batch (:func:`~risloss.functional.adversarial_divergence`, samples the two
            classify alike), so its images follow what the student has not learned yet. One
            more student pass per iteration (without a parameter gradient). By default 1 for
            ``distill`` and 0 (the generator objective alone) for the others.
        student_mixup: probability that an image of a student step is mixed with another
            image of the step's batch (:class:`~risloss.perturb.MixUp`, after the
            augmentation), the teacher's logits of the mixed image as target. By default 0.5
            for ``distill`` and 0 for the others.
        student_cutmix: probability that a box of another image of the step's batch is pasted
            into a student image (:class:`~risloss.perturb.CutMix`, after the augmentation and
            MixUp), the teacher's logits of the result as target. 0 (none) by default.
        student_steps: student optimizer steps per iteration after warm-up (each on its own
            augmented view; after the first, on batches drawn from the replay pool when
            ``replay_size > 0``, else on the iteration's batch again). The learning-rate
            schedule still advances once per iteration. By default 4 for ``quantize`` (the
            quantized copy learns more from each synthesized image, measured in the benchmark
            docs, for 1.5 times the CPU time) and for ``distill`` (with ``student_batch_size``:
            most of the run's time goes to the student), 1 for ``prune``.
        student_batch_size: ``None``: the first student step of an iteration trains on the
            iteration's batch and the others on ``batch_size`` images of the replay pool (as
            above). A number: every student step trains on that many images drawn from the
            whole pool (the pool regime of data-free distillation: each synthesized image is
            shown to the student many times, under new augmentations). Needs
            ``replay_size > 0``. By default 128 for ``distill`` and ``None`` for the others.
        replay_size: capacity, in images, of a pool of past synthesized batches (with the
            teacher's logits and the labels) that the extra student steps draw from; the
            oldest images leave first; checkpointed with the run. 0: no pool. By default 4096
            for ``quantize``, 20,000 for ``distill`` (every image of the default run) and 0
            for ``prune``.
        replay_memory_mb: memory budget of the replay pool in megabytes (``2**20`` bytes): the
            pool keeps ``min(replay_size, budget // bytes per image)`` images, an image taking
            its float32 values, the teacher's logits and its label row. The default 64 keeps
            all 4096 images of 1x28x28 or 3x32x32 images and about 110 of 3x224x224 ones (not
            2.4 GB), in memory and in every checkpoint. A budget below one batch of images is
            refused when ``student_steps > 1`` draws from the pool.
        image_size: size the evaluation (and ``method="real"``) images are resized and
            center-cropped to, ``None`` to keep their size, or ``"default"``: a shipped
            teacher's input size, else the data set's own convention (see
            :func:`risloss.data.load_dataset`).
        normalize: ``(mean, std)`` per channel, ``None`` or ``"none"`` for images in
            ``[0, 1]``, or ``"default"``: a shipped teacher's recorded normalization, else the
            data set's own.
        global_batch_statistics: in a distributed run (``torchrun``), compute the batch
            statistics of the generator's BatchNorm layers, of a distillation student's and of
            the BNS loss over the global batch of all processes (``False``: over each process's
            own batch, less communication). No effect in a single process.

    Raises:
        ValueError: a value out of range (the message names the field and the allowed values),
            or fields that contradict each other (``warmup > iters``, only one of ``w_bits``
            and ``a_bits``, a ``package.module:factory`` model without ``weights``, ...).

    Example:
        >>> from risloss.training import RISConfig, TrainConfig
        >>> config = TrainConfig(iters=1000, ris=RISConfig(num_draws=2))
        >>> config.task, config.method, config.w_bits, config.ris.num_draws
        ('quantize', 'ris', 4, 2)
        >>> TrainConfig(iters=10, warmup=20)
        Traceback (most recent call last):
        ...
        ValueError: warmup must be <= iters (10), got 20
    """

    task: Task = setting("quantize", validator=one_of(TASKS), commands=(), help="the task")
    method: Method = setting("ris", validator=one_of(METHODS), help="image source")
    model: str = setting(
        DEFAULT_TEACHER,
        validator=teacher_name,
        help="the teacher (see `risloss models`; a package.module:factory takes --weights)",
    )
    weights: str | None = setting(
        None, help="state-dict file for a package.module:factory --model", metavar="FILE"
    )
    data: str = setting(
        attrs.Factory(lambda self: _data_of(self.model), takes_self=True),
        validator=dataset_name,
        help="evaluation data (synthesize: the data the model takes, read for its shape; a "
        "package.module:factory is called with the split and returns a Dataset of (image, "
        "label))",
        default_help="the shipped teacher's data set, else fashion-mnist",
    )
    student: str = setting(
        "resnet8",
        validator=one_of(STUDENTS),
        commands=("distill",),
        help="architecture of the student",
    )
    student_init: StudentInit = setting(
        "random",
        validator=one_of(STUDENT_INITS),
        commands=("distill",),
        help="start the student from random weights, or from the teacher's where names and "
        "shapes match",
    )
    w_bits: int | None = _bits(
        "w_bits",
        help="bit width of the weights (with --a-bits; distill and prune quantize only with both)",
    )
    a_bits: int | None = _bits("a_bits", help="bit width of the activations (with --w-bits)")
    first_last_bits: int | None = inherit(
        QuantSpec,
        "first_last_bits",
        commands=TASKS,
        help="bit width of the first and last layer (with --w-bits and --a-bits)",
        metavar="N",
        default_help="as the rest",
    )
    sparsity: float = setting(
        0.5,
        validator=number_in(0.0, 1.0, open_high=True),
        commands=("prune",),
        help="fraction of the conv/linear weights (or, with --structured, of the channels "
        "inside residual blocks) to remove",
    )
    structured: bool = setting(
        False,
        validator=boolean,
        commands=("prune",),
        help="remove whole channels by L1 norm (smaller layers) instead of single weights",
    )
    iters: int = setting(
        validator=int_at_least(1),
        help="total iterations",
        metavar="N",
        default_help="300, 1500 for distill",
    )
    warmup: int = setting(
        validator=int_at_least(0),
        commands=TASKS,
        help="generator-only warm-up iterations, at most --iters; by default a third of them, a "
        "fifth for distill",
        metavar="N",
    )
    batch_size: int = setting(
        32, validator=int_at_least(2), help="images per iteration", metavar="N"
    )
    seed: int = setting(
        0, validator=int_in(0, 2**32 - 1), help="seed of every random draw", metavar="N"
    )
    device: str = setting("cpu", validator=device_name, help="where the run computes")
    lr_generator: float = setting(
        1e-3, validator=_LR, help="learning rate of the generator (Adam)", metavar="X"
    )
    lr_student: float = setting(
        validator=_LR,
        commands=TASKS,
        help="learning rate of the student (SGD, cosine-decayed)",
        metavar="X",
    )
    weight_decay: float = setting(
        1e-4, validator=number_in(0.0, 1.0), commands=(), help="weight decay of the student"
    )
    kd_temperature: float = _student_loss(
        validator=number_in(0.0, 100.0, open_low=True), help="distillation temperature"
    )
    kd_weight: float = _student_loss(
        1.0, validator=_LOSS_WEIGHT, help="weight of the distillation loss"
    )
    ce_weight: float = _student_loss(
        0.0, validator=_LOSS_WEIGHT, help="weight of the cross-entropy on generator labels"
    )
    checkpoint_every: int = setting(
        100, validator=int_at_least(1), help="iterations between checkpoints", metavar="N"
    )
    eval_every: int = setting(
        0,
        validator=int_at_least(0),
        commands=TASKS,
        help="iterations between test evaluations during training, 0: at the end only",
        metavar="N",
    )
    eval_limit: int | None = setting(
        None,
        validator=optional(int_at_least(1)),
        commands=TASKS,
        help="evaluate on the first N test images only",
        metavar="N",
        default_help="all",
    )
    ris: RISConfig = setting(
        attrs.Factory(lambda self: ris_for(self.task), takes_self=True),
        commands=(),
        help="the generator objective, one option per field",
    )
    global_batch_statistics: bool = setting(
        True,
        validator=boolean,
        option="--local-batch-statistics",
        commands=TASKS,
        help="under torchrun: BatchNorm statistics (generator, distillation student, BNS loss) "
        "over each process's batch instead of the global batch",
    )
    generator_conditioning: Conditioning = setting(
        "concat",
        validator=one_of(CONDITIONINGS),
        help="how the generator takes its label: concatenated to the noise, or multiplied with "
        "it as in GDFQ",
    )
    generator_output_lr_scale: float = setting(
        10.0,
        validator=non_negative,
        commands=(),
        help="learning-rate multiple of the generator's output scale and shift",
    )
    generator_output_bound: OutputBound = setting(
        "clamp",
        validator=one_of(OUTPUT_BOUNDS),
        commands=(),
        help="how the generator keeps its images to the input range: clamp or tanh",
    )
    input_mean: tuple[float, ...] | None = setting(
        None,
        converter=_optional_floats,
        validator=optional(channel_values()),
        help="per-channel mean of the images the model expects, with --input-std",
        metavar="X",
        default_help="standardized images",
    )
    input_std: tuple[float, ...] | None = setting(
        None,
        converter=_optional_floats,
        validator=optional(channel_values(positive=True)),
        help="per-channel standard deviation of the images the model expects, with --input-mean",
        metavar="X",
        default_help="standardized images",
    )
    fit_input_statistics: FitInputStatistics = setting(
        "auto",
        validator=_fit_option,
        help="start the generator in the input range the model's first BatchNorm layer expects "
        "(--no-fit-input-statistics: standardized images); without either, it starts there "
        "only when that range is far from standardized images",
    )
    input_range: str | tuple[tuple[float, ...], tuple[float, ...]] = setting(
        converter=_input_range_option,
        help="where the generator's images may lie: auto (pixels in [0, 1] under the model's "
        "normalization), none (unbounded), or LOW HIGH in the model's input space",
        metavar="BOUND",
    )
    student_augmentation: StudentAugmentation = setting(
        validator=one_of(STUDENT_AUGMENTATIONS),
        commands=TASKS,
        help="train the student on perturbed views of each batch (an operator of this pool per "
        "image, the teacher's logits of the view as target)",
    )
    student_mixup: float = setting(
        validator=number_in(0.0, 1.0),
        commands=TASKS,
        help="probability that a student image is mixed with another of its step's batch "
        "(MixUp, labelled by the teacher's prediction of the mixed image)",
        metavar="P",
    )
    student_cutmix: float = setting(
        0.0,
        validator=number_in(0.0, 1.0),
        commands=TASKS,
        help="probability that a box of another image of its step's batch is pasted into a "
        "student image (CutMix, labelled by the teacher's prediction of the result)",
        metavar="P",
    )
    adversarial_weight: float = setting(
        validator=_LOSS_WEIGHT,
        commands=TASKS,
        help="weight of the generator's adversarial term once the student trains (it also "
        "seeks images the student gets wrong), 0 for none",
        metavar="X",
    )
    student_steps: int = setting(
        validator=int_in(1, 100),
        commands=TASKS,
        help="student optimizer steps per iteration after warm-up (the extra ones on "
        "--replay-size past images, or on the batch again)",
        metavar="N",
    )
    student_batch_size: int | None = setting(
        validator=optional(int_at_least(2)),
        commands=TASKS,
        help="images of each student step, drawn from the whole pool of --replay-size past "
        "images; none: the first step on the iteration's batch, the others on --batch-size "
        "images of the pool",
        metavar="N",
        default_help="128 for distill, else none",
    )
    replay_size: int = setting(
        validator=int_in(0, 10_000_000),
        commands=TASKS,
        help="images of past batches kept for the extra steps, 0 for none",
        metavar="N",
    )
    replay_memory_mb: float = setting(
        64.0,
        validator=number_in(0.0, 1_000_000.0, open_low=True),
        commands=TASKS,
        help="memory budget of the replay pool in megabytes (2^20 bytes), in memory and in "
        "each checkpoint: it keeps at most --replay-size images, fewer when they do not fit",
        metavar="MB",
    )
    # Data options, passed to risloss.data.load_dataset (validated by it, named as fields here).
    image_size: int | str | None = setting(
        "default",
        converter=lambda v: _image_size_option(v, "image_size"),
        help="resize the data's images (shorter side) and center-crop them to NxN; none keeps "
        "their size",
        metavar="N",
        default_help="a shipped teacher's input size, else 256 then crop 224 for imagefolder:, "
        "unchanged for the others",
    )
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | str | None = setting(
        "default",
        converter=lambda v: _normalize_option(v, "normalize"),
        help="normalize the data's [0, 1] pixels with this mean and std, comma-separated, one "
        "value per channel, e.g. --normalize 0.5,0.5,0.5 0.25,0.25,0.25",
        metavar=("MEAN", "STD"),
        default_help="a shipped teacher's own, else ImageNet's for imagefolder: and the data "
        "set's for the others",
    )

    @iters.default
    def _default_iters(self) -> int:
        return DISTILL_ITERS if self.task == "distill" else 300

    @warmup.default
    def _default_warmup(self) -> int:
        return self.iters // (5 if self.task == "distill" else 3)

    @input_range.default
    def _default_input_range(self) -> str:
        return "auto" if self.task == "distill" else "none"

    @adversarial_weight.default
    def _default_adversarial_weight(self) -> float:
        return DISTILL_ADVERSARIAL_WEIGHT if self.task == "distill" else 0.0

    @student_augmentation.default
    def _default_student_augmentation(self) -> str:
        return "all" if self.task == "distill" else "none"

    @kd_temperature.default
    def _default_kd_temperature(self) -> float:
        return 4.0 if self.task == "distill" else 1.0

    @student_steps.default
    def _default_student_steps(self) -> int:
        return {"quantize": 4, "distill": 4}.get(self.task, 1)

    @student_mixup.default
    def _default_student_mixup(self) -> float:
        return DISTILL_MIXUP if self.task == "distill" else 0.0

    @student_batch_size.default
    def _default_student_batch_size(self) -> int | None:
        return 128 if self.task == "distill" else None

    @replay_size.default
    def _default_replay_size(self) -> int:
        return {"quantize": 4096, "distill": 20_000}.get(self.task, 0)

    @lr_student.default
    def _default_lr_student(self) -> float:
        return DISTILL_LR_STUDENT if self.task == "distill" else 1e-3

    def __attrs_post_init__(self) -> None:
        if self.warmup > self.iters:
            raise ValueError(f"warmup must be <= iters ({self.iters}), got {self.warmup}")
        if self.task == "quantize" and (self.w_bits is None or self.a_bits is None):
            raise ValueError("task='quantize' needs w_bits and a_bits (integers in 2..16)")
        if (self.w_bits is None) != (self.a_bits is None):
            raise ValueError("w_bits and a_bits must both be set or both be None")
        if ":" in self.model and self.weights is None and not self.model.startswith("/"):
            raise ValueError(
                f"model {self.model!r} is given as package.module:factory, so weights= "
                "(a state-dict file) is required"
            )
        if self.student_init != "random" and self.task != "distill":
            raise ValueError(
                f"student_init={self.student_init!r} applies to task='distill' only (a "
                f"{self.task} student is a copy of the teacher), got task={self.task!r}"
            )
        if self.student_batch_size is not None and self.replay_size == 0:
            raise ValueError(
                f"student_batch_size={self.student_batch_size} draws the student's batches "
                "from the pool of past images, so replay_size must be > 0 (or student_batch_size "
                "none: the first step on the iteration's batch)"
            )
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("input_mean and input_std must both be given or both be None")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (nested ``ris`` included).

        Returns:
            Every field by name; ``ris`` as a nested dictionary.

        Example:
            >>> from risloss.training import TrainConfig
            >>> d = TrainConfig(seed=3).to_dict()
            >>> d["seed"], d["ris"]["bns_weight"]
            (3, 10.0)
        """
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a configuration written by :meth:`to_dict`.

        Args:
            data: the dictionary, for instance the ``config`` entry of a run's
                ``metrics.json``.

        Returns:
            The configuration, validated again.

        Example:
            >>> from risloss.training import TrainConfig
            >>> config = TrainConfig(seed=3)
            >>> TrainConfig.from_dict(config.to_dict()) == config
            True
        """
        data = dict(data)
        ris = RISConfig(**data.pop("ris", {}))
        return cls(ris=ris, **data)
