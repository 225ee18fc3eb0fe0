"""The ``risloss`` command line.

A mistake the user can fix (a bad option, an unreadable file, an output folder that cannot be
written or already holds a run) ends in one line on standard error and exit status 2, found
before any work starts wherever that is possible; ``--debug`` (or ``RISLOSS_DEBUG=1`` in the
environment) shows the traceback instead. Ctrl-C exits with status 130: during training after
saving a checkpoint, before it with nothing written.

The option values go to :class:`~risloss.training.TrainConfig` unchecked; its errors name the
field (``batch_size``), and :func:`_in_option_terms` renames it as the option (``--batch-size``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

if TYPE_CHECKING:
    from risloss.training import TrainConfig

__all__ = ["main"]

DEBUG_ENV = "RISLOSS_DEBUG"
"""Set to ``1`` to see the traceback behind an error message."""

RUN_MARKERS = ("checkpoint.pt", "metrics.json")
"""A folder holding one of these holds a run: it is refused without --resume or --overwrite."""

RUN_OUTPUTS = (*RUN_MARKERS, "student.pt", "generator.pt", "samples.png", "losses.png")


class _Exit(Exception):
    """Stop the command: print ``message`` (one line) and exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Parsing of option values. Ranges are TrainConfig's to check (see _in_option_terms); only
# train-teacher, which has no configuration class, checks its own.


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _input_range(words: list[str]) -> Any:
    """``--input-range``'s words as :class:`~risloss.training.TrainConfig` takes them."""
    if len(words) == 1 and words[0] in ("auto", "none"):
        return words[0]
    if len(words) != 2:
        raise _Exit(f"--input-range must be auto, none or LOW HIGH (two numbers), got {words}")
    try:
        return (float(words[0]), float(words[1]))
    except ValueError:
        raise _Exit(
            f"--input-range must be auto, none or LOW HIGH (two numbers), got {words}"
        ) from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{2**32 - 1}, got {value}")
    return value


def _learning_rate(text: str) -> float:
    value = _float(text)
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 10], got {value}")
    return value


def _data_name(text: str) -> str:
    if text in ("fashion-mnist", "cifar10", "cifar100") or (
        text.startswith("imagefolder:") and len(text) > len("imagefolder:")
    ):
        return text
    module, _, factory = text.partition(":")
    if module and factory and not text.startswith("imagefolder:"):
        return text
    raise argparse.ArgumentTypeError(
        "expected 'fashion-mnist', 'cifar10', 'cifar100', 'imagefolder:PATH' or "
        f"'package.module:factory', got {text!r}"
    )


def _range(cls: type, name: str) -> str:
    """The allowed range of a configuration field, from its validator (``""`` if it has none)."""
    import attrs

    from risloss._validators import int_in, number_in

    v = attrs.fields_dict(cls)[name].validator
    if isinstance(v, int_in):
        return f"{v.low}..{v.high}" if v.high is not None else f">= {v.low}"
    if isinstance(v, number_in):
        if math.isinf(v.high):
            return f"{'>' if v.open_low else '>='} {v.low:g}"
        return f"{'(' if v.open_low else '['}{v.low:g}, {v.high:g}]"
    return ""


def _image_size(text: str) -> int | None:
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return value


def _numbers(text: str) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> ``(0.5, 0.5, 0.5)``: comma-separated finite numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}"
        )
    return values


class _Normalize(argparse.Action):
    """``--normalize MEAN STD``: one number per channel in each, as many in both, std > 0."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        mean, std = values
        if len(mean) != len(std):
            raise argparse.ArgumentError(
                self, f"MEAN and STD need as many values, got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise argparse.ArgumentError(self, f"STD values must be > 0, got {std}")
        setattr(namespace, self.dest, (mean, std))


def _help(text: str, allowed: str, default: Any) -> str:
    return f"{text}{', ' + allowed if allowed else ''} (default: {default})"


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback behind an error message (or set {DEBUG_ENV}=1)",
    )


def _add_run_options(p: argparse.ArgumentParser, task: str) -> None:
    from risloss._validators import choices_of
    from risloss.models import DEFAULT_TEACHER
    from risloss.training import METHODS, SYNTHESIS_METHODS, TrainConfig
    from risloss.training._config import STUDENTS

    student = task != "synthesize"  # synthesize trains only the generator
    d = TrainConfig(task=cast(Any, task if student else "quantize"))

    def rng(name: str) -> str:
        return _range(TrainConfig, name)

    p.add_argument(
        "--model",
        default=DEFAULT_TEACHER,
        help="a shipped teacher (see `risloss models`) or package.module:factory with --weights "
        f"(default: {DEFAULT_TEACHER})",
    )
    p.add_argument(
        "--weights", default=None, help="state-dict file for a package.module:factory model"
    )
    p.add_argument(
        "--data",
        type=_data_name,
        default="fashion-mnist",
        help=("evaluation data" if student else "data the model takes (read for its shape)")
        + ": fashion-mnist, cifar10, cifar100, imagefolder:PATH or "
        "package.module:factory (called with the split, returns a Dataset of (image, label))",
    )
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=argparse.SUPPRESS,  # TrainConfig's "default"
        metavar="N",
        help="resize the data's images (shorter side) and center-crop them to NxN; 'none' keeps "
        "their size (default: a shipped teacher's input size, else 256 then crop 224 for "
        "imagefolder:, unchanged for the others)",
    )
    norm = p.add_mutually_exclusive_group()
    norm.add_argument(
        "--normalize",
        nargs=2,
        type=_numbers,
        action=_Normalize,
        default=argparse.SUPPRESS,  # TrainConfig's "default"
        metavar=("MEAN", "STD"),
        help="normalize the data's [0, 1] pixels with this mean and std, comma-separated, one "
        "value per channel, e.g. --normalize 0.5,0.5,0.5 0.25,0.25,0.25 (default: a shipped "
        "teacher's own, else ImageNet's for imagefolder: and the data set's for the others)",
    )
    norm.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_const",
        const=None,
        default=argparse.SUPPRESS,  # TrainConfig's "default"
        help="keep the data's pixels in [0, 1] (for models that take such images)",
    )
    p.add_argument(
        "--method",
        choices=METHODS if student else SYNTHESIS_METHODS,
        default="ris",
        help="image source (default: ris)",
    )
    if task == "distill":
        p.add_argument(
            "--student",
            default=d.student,
            help=f"architecture of the student: {' or '.join(STUDENTS)} (default: {d.student})",
        )
        p.add_argument(
            "--student-init",
            choices=choices_of(TrainConfig)["student_init"],
            default=d.student_init,
            help="start the student from random weights, or from the teacher's where names "
            f"and shapes match (default: {d.student_init})",
        )
    if task == "prune":
        p.add_argument(
            "--sparsity",
            type=_float,
            default=d.sparsity,
            help="fraction in [0, 1) of the conv/linear weights (or, with --structured, of the "
            f"channels inside residual blocks) to remove (default: {d.sparsity})",
        )
        p.add_argument(
            "--structured",
            action="store_true",
            help="remove whole channels by L1 norm (smaller layers) instead of single weights",
        )
    if task == "quantize":
        p.add_argument("--w-bits", type=_int, default=4, help="weight bits, 2..16 (default: 4)")
        p.add_argument("--a-bits", type=_int, default=4, help="activation bits, 2..16 (default: 4)")
    elif student:
        p.add_argument(
            "--w-bits",
            type=_int,
            default=None,
            help="also quantize weights to this width, 2..16 (with --a-bits; default: off)",
        )
        p.add_argument(
            "--a-bits",
            type=_int,
            default=None,
            help="also quantize activations to this width, 2..16 (with --w-bits; default: off)",
        )
    if student:
        p.add_argument(
            "--first-last-bits",
            type=_int,
            default=None,
            help="bits of the first and last layer, 2..16 (default: as the rest)",
        )
    p.add_argument(
        "--iters", type=_int, default=d.iters, help=_help("total iterations", rng("iters"), d.iters)
    )
    if student:
        p.add_argument(
            "--warmup",
            type=_int,
            default=None,
            help=_help(
                "generator-only warm-up iterations, at most --iters",
                rng("warmup"),
                f"a third of --iters, {d.warmup}",
            ),
        )
    p.add_argument(
        "--batch-size",
        type=_int,
        default=d.batch_size,
        help=_help("images per iteration", rng("batch_size"), d.batch_size),
    )
    if student:
        p.add_argument(
            "--lr-student",
            type=_float,
            default=None,
            help=_help("learning rate of the student", rng("lr_student"), d.lr_student),
        )
        p.add_argument(
            "--student-augmentation",
            choices=choices_of(TrainConfig)["student_augmentation"],
            default=d.student_augmentation,
            help="train the student on perturbed views of each batch (an operator of this pool "
            "per image, the teacher's logits of the view as target) "
            f"(default: {d.student_augmentation})",
        )
        for name, option, text in (
            (
                "student_steps",
                "--student-steps",
                "student optimizer steps per iteration after warm-up (the extra ones on "
                "--replay-size past images, or on the batch again)",
            ),
            (
                "replay_size",
                "--replay-size",
                "images of past batches kept for the extra steps, 0 for none",
            ),
            (
                "adversarial_weight",
                "--adversarial-weight",
                "weight of the generator's adversarial term once the student trains (it also "
                "seeks images the student gets wrong), 0 for none",
            ),
        ):
            default = getattr(d, name)
            is_int = isinstance(default, int)
            p.add_argument(
                option,
                type=_int if is_int else _float,
                metavar="N" if is_int else "X",
                default=default,
                help=_help(text, rng(name), default),
            )
    p.add_argument(
        "--lr-generator",
        type=_float,
        default=d.lr_generator,
        help=_help("learning rate of the generator", rng("lr_generator"), d.lr_generator),
    )
    p.add_argument(
        "--generator-conditioning",
        choices=("concat", "multiply"),
        default=d.generator_conditioning,
        help="how the generator takes its label: concatenated to the noise, or multiplied "
        f"with it as in GDFQ (default: {d.generator_conditioning})",
    )
    p.add_argument(
        "--input-mean",
        type=_float,
        nargs="+",
        metavar="X",
        default=None,
        help="per-channel mean of the images the model expects, with --input-std "
        "(default: standardized images)",
    )
    p.add_argument(
        "--input-std",
        type=_float,
        nargs="+",
        metavar="X",
        default=None,
        help="per-channel standard deviation of the images the model expects, with --input-mean",
    )
    p.add_argument(
        "--fit-input-statistics",
        action="store_true",
        help="start the generator in the input range the model's first BatchNorm layer expects "
        "(for a model whose input range is unknown)",
    )
    p.add_argument(
        "--input-range",
        nargs="+",
        metavar="BOUND",
        default=[d.input_range],
        help="where the generator's images may lie: auto (pixels in [0, 1] under the model's "
        "normalization), none (unbounded), or LOW HIGH in the model's input space "
        f"(default: {d.input_range})",
    )
    p.add_argument("--seed", type=_int, default=d.seed, help=_help("seed", rng("seed"), d.seed))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--out", default=f"runs/{task}", help=f"output folder (default: runs/{task})")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output folder that holds a run; its files are replaced once the "
        "new run has saved its first checkpoint",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_int,
        default=d.checkpoint_every,
        help=_help("iterations between checkpoints", rng("checkpoint_every"), d.checkpoint_every),
    )
    if student:
        p.add_argument(
            "--eval-every",
            type=_int,
            default=0,
            help="test evaluations during training (0: at the end only)",
        )
        p.add_argument(
            "--eval-limit",
            type=_int,
            default=None,
            help="evaluate on the first N >= 1 test images only (default: all)",
        )
    _add_objective_options(p, student=student)
    if student:
        p.add_argument(
            "--local-batch-statistics",
            action="store_true",
            help="under torchrun: BatchNorm statistics (generator, distillation student, BNS "
            "loss) over each process's batch instead of the global batch",
        )
    p.add_argument("--quiet", action="store_true", help="no progress report and no messages")
    _add_debug(p)


# Options of the generator objective (RISConfig field, option, help), in a group of their own.
_RIS_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("bns_weight", "--bns-weight", "beta, weight of the BatchNorm-statistics loss"),
    ("robustness_weight", "--robustness-weight", "alpha, weight of the robustness loss"),
    ("diversity_weight", "--diversity-weight", "gamma, weight of the correlation penalty"),
    (
        "feature_diversity_weight",
        "--feature-diversity-weight",
        "weight of the within-class feature similarity (both methods)",
    ),
    ("input_perturbation", "--input-perturbation", "perturb the inputs"),
    ("weight_perturbation", "--weight-perturbation", "perturb the teacher's weights"),
    ("input_pool", "--input-pool", "operators the input perturbation draws from"),
    ("input_noise_std", "--input-noise-std", "std of the additive noise in the input pool"),
    ("weight_noise_mode", "--weight-noise-mode", "weight noise ('quant': rounding error)"),
    ("weight_noise_bits", "--weight-noise-bits", "bits of the 'quant' weight noise"),
    ("weight_noise_eps", "--weight-noise-eps", "weight-noise scale"),
    ("mode", "--robustness-mode", "how input and weight perturbations combine"),
    ("num_draws", "--num-draws", "perturbation draws per step"),
    ("feature_distance", "--feature-distance", "distance between clean and perturbed features"),
    ("prediction_distance", "--prediction-distance", "divergence between predictions"),
    ("threshold", "--threshold", "inconsistency below this costs nothing"),
    ("diversity", "--diversity", "diversity reading"),
    ("correlation_pairs", "--correlation-pairs", "pairs the correlation penalty covers"),
    (
        "soft_label_classes",
        "--soft-label-classes",
        "classes mixed in a soft label, at most the teacher's classes",
    ),
)

# Options of the student loss (TrainConfig field, option, help).
_STUDENT_LOSS_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("kd_temperature", "--kd-temperature", "distillation temperature"),
    ("kd_weight", "--kd-weight", "weight of the distillation loss"),
    ("ce_weight", "--ce-weight", "weight of the cross-entropy on generator labels"),
)


def _add_objective_options(p: argparse.ArgumentParser, *, student: bool = True) -> None:
    """One option per field of :class:`~risloss.training.RISConfig`, plus the student's loss
    weights (when the command trains a student)."""
    import attrs

    from risloss._validators import choices_of
    from risloss.training import RISConfig, TrainConfig

    choices = choices_of(RISConfig)
    d = RISConfig()
    g = p.add_argument_group(
        "generator objective (CE + beta*BNS + alpha*robustness + gamma*diversity; "
        "the RIS terms apply with --method ris)"
    )
    fields = {f.name for f in attrs.fields(RISConfig)}
    for name, option, text in _RIS_OPTIONS:
        if name not in fields:  # pragma: no cover - guards the table against renames
            raise RuntimeError(f"RISConfig has no field {name!r}")
        default = getattr(d, name)
        dest = f"ris_{name}"
        if isinstance(default, bool):
            g.add_argument(
                option,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{text} (default: {'on' if default else 'off'})",
            )
        elif name in choices:
            g.add_argument(
                option,
                dest=dest,
                choices=choices[name],
                default=default,
                help=f"{text} (default: {default})",
            )
        else:
            is_int = isinstance(default, int)
            g.add_argument(
                option,
                dest=dest,
                type=_int if is_int else _float,
                metavar="N" if is_int else "X",
                default=default,
                help=_help(text, _range(RISConfig, name), default),
            )
    if not student:
        return
    t = TrainConfig()
    g2 = p.add_argument_group("student loss")
    by_task = {"kd_temperature": "1, or 4 for distill"}  # the defaults that depend on --task
    for name, option, text in _STUDENT_LOSS_OPTIONS:
        default = getattr(t, name)
        g2.add_argument(
            option,
            metavar="X",
            type=_float,
            default=None if name in by_task else default,
            help=_help(text, _range(TrainConfig, name), by_task.get(name, default)),
        )


def _check_run_args(args: argparse.Namespace) -> str | None:
    """Errors about options that the configuration does not hold, named as on the command line."""
    if args.first_last_bits is not None and args.w_bits is None:
        return "--first-last-bits needs --w-bits and --a-bits"
    if ":" not in args.model and args.weights is not None:
        return "--weights is only used with a package.module:factory --model"
    return None


def _option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Configuration field -> the option that sets it (``batch_size`` -> ``--batch-size``)."""
    import attrs

    from risloss.training import RISConfig, TrainConfig

    fields = {f.name for f in (*attrs.fields(TrainConfig), *attrs.fields(RISConfig))}
    names = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        name = action.dest.removeprefix("ris_")
        if longs and name in fields:
            names[name] = longs[0]
    return names


def _in_option_terms(message: str, options: Mapping[str, str], *, everywhere: bool) -> str:
    """Name the command-line options where the library names configuration fields.

    ``everywhere``: rename every field in the message (messages of the configuration classes);
    otherwise only a field that starts the message (messages of a run, whose other words may
    be field names by chance: "data set").

    Example:
        >>> from risloss.cli import _in_option_terms
        >>> names = {"warmup": "--warmup", "iters": "--iters", "batch_size": "--batch-size"}
        >>> _in_option_terms("warmup must be <= iters (10), got 20", names, everywhere=True)
        '--warmup must be <= --iters (10), got 20'
        >>> _in_option_terms("set batch_size=4 in the data set", names, everywhere=True)
        'set --batch-size 4 in the data set'
    """
    if not options:
        return message
    alternatives = "|".join(re.escape(k) for k in sorted(options, key=len, reverse=True))
    pattern = rf"(?<![\w.:'\"/-])({alternatives})(?![\w'\"/-])(=?)"
    if not everywhere:
        pattern = "^" + pattern

    def rename(m: re.Match[str]) -> str:
        return options[m.group(1)] + (" " if m.group(2) else "")

    return " ".join(re.sub(pattern, rename, message).split())


def _config_from_args(args: argparse.Namespace, task: str) -> TrainConfig:
    """The run's configuration; a bad value raises :class:`_Exit` naming the option."""
    from risloss.training import RISConfig, TrainConfig

    options = _option_names(args.parser) if "parser" in args else {}
    try:
        ris = RISConfig(**{name: getattr(args, f"ris_{name}") for name, _, _ in _RIS_OPTIONS})
    except ValueError as exc:
        ris_options = {name: option for name, option, _ in _RIS_OPTIONS}
        raise _Exit(_in_option_terms(str(exc), ris_options, everywhere=True)) from exc
    d = TrainConfig()
    try:
        return TrainConfig(
            task=cast(Any, task),
            method=args.method,
            model=args.model,
            weights=args.weights,
            data=args.data,
            student=getattr(args, "student", d.student),
            student_init=getattr(args, "student_init", d.student_init),
            w_bits=args.w_bits,
            a_bits=args.a_bits,
            first_last_bits=args.first_last_bits,
            sparsity=getattr(args, "sparsity", d.sparsity),
            structured=getattr(args, "structured", d.structured),
            iters=args.iters,
            **({} if getattr(args, "warmup", None) is None else {"warmup": args.warmup}),
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            lr_generator=args.lr_generator,
            **({} if args.lr_student is None else {"lr_student": args.lr_student}),
            checkpoint_every=args.checkpoint_every,
            eval_every=args.eval_every,
            eval_limit=args.eval_limit,
            **({} if args.kd_temperature is None else {"kd_temperature": args.kd_temperature}),
            kd_weight=args.kd_weight,
            ce_weight=args.ce_weight,
            ris=ris,
            global_batch_statistics=not args.local_batch_statistics,
            image_size=getattr(args, "image_size", d.image_size),
            normalize=getattr(args, "normalize", d.normalize),
            generator_conditioning=args.generator_conditioning,
            input_mean=args.input_mean,
            input_std=args.input_std,
            fit_input_statistics=args.fit_input_statistics,
            input_range=_input_range(args.input_range),
            student_augmentation=getattr(args, "student_augmentation", d.student_augmentation),
            student_steps=getattr(args, "student_steps", d.student_steps),
            replay_size=getattr(args, "replay_size", d.replay_size),
            adversarial_weight=getattr(args, "adversarial_weight", d.adversarial_weight),
        )
    except ValueError as exc:
        raise _Exit(_in_option_terms(str(exc), options, everywhere=True)) from exc


def _count(n: float) -> str:
    """``77754 -> '77.8k'``, ``9345920 -> '9.35M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _summary(metrics: dict[str, Any], config: TrainConfig) -> list[str]:
    """The lines printed at the end of a run."""
    quantized = "quant_top1" in metrics
    if config.task == "quantize":
        label = "quantized"
    elif config.task == "prune":
        label = "pruned + quantized" if quantized else "pruned"
    else:
        label = f"{config.student} student" + (" (quantized)" if quantized else "")
    width = max(22, len(label) + 8)
    lines = [
        f"{'full-precision top-1:':<{width}}{metrics['fp_top1']:.2f}%",
        f"{label + ' top-1:':<{width}}{metrics['student_top1']:.2f}%  "
        f"({config.method}, final iteration)",
    ]
    if "prune" in metrics:
        a, b = metrics["prune"]["before"], metrics["prune"]["after"]
    elif "distill" in metrics:
        a, b = metrics["distill"]["teacher"], metrics["distill"]["student"]
    else:
        return lines
    lines += [
        f"{'parameters:':<{width}}{_count(a['params'])} -> {_count(b['params'])} "
        f"({_count(b['nonzero_params'])} non-zero)",
        f"{'MACs per image:':<{width}}{_count(a['macs'])} -> {_count(b['macs'])} "
        f"({_count(b['effective_macs'])} on non-zero weights)",
    ]
    if a["sparsity"] or b["sparsity"]:
        lines.append(
            f"{'sparsity:':<{width}}{100 * a['sparsity']:.1f}% -> {100 * b['sparsity']:.1f}%"
        )
    return lines


def _start_line(config: TrainConfig, out: str, resume: bool) -> str:
    """What the run is about to do: model, task, bits, method, iterations, output folder."""
    bits = ""
    if config.w_bits is not None:
        bits = f"W{config.w_bits}A{config.a_bits}"
        if config.first_last_bits is not None:
            bits += f" (first/last layer {config.first_last_bits} bits)"
    if config.task == "quantize":
        what = f"{config.model} to {bits}"
    elif config.task == "distill":
        what = f"{config.model} into a {config.student}" + (f", {bits}" if bits else "")
    else:
        kind = "channels" if config.structured else "weights"
        what = f"{config.model}, {100 * config.sparsity:g}% of the {kind}" + (
            f", {bits}" if bits else ""
        )
    return (
        f"{what}, method {config.method}, {config.iters} iterations "
        f"({config.warmup} warm-up), batch {config.batch_size}, {config.device} -> {out}"
        + (" (resuming)" if resume else "")
    )


def _main_process() -> bool:
    """Whether this is rank 0 of a torchrun launch (or not launched by torchrun at all)."""
    return os.environ.get("RANK", "0") in ("0", "")


def _writable_folder(path: Path, label: str) -> None:
    """Refuse ``path`` as an output folder unless it is (or can be made) a writable folder.

    Writes and removes a probe file in ``path`` or in its nearest existing parent, so nothing
    is left behind: the run creates the folder when it starts writing.
    """
    probe = path
    try:
        if path.exists() and not path.is_dir():
            raise _Exit(f"{label}: {path} is a file, not a folder")
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise _Exit(f"{label}: {probe} is a file, so no folder can be made in it")
        fd, name = tempfile.mkstemp(prefix=".risloss-write-test-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise _Exit(f"{label}: cannot write in {probe} ({exc.strerror or exc})") from exc


def _check_out(args: argparse.Namespace) -> Path:
    out = args.out
    if not out.strip():
        raise _Exit("--out: expected an output folder, got an empty name")
    path = Path(out)
    _writable_folder(path, f"--out {out}")
    held = [name for name in RUN_MARKERS if (path / name).exists()]
    if held and not (args.resume or args.overwrite):
        raise _Exit(
            f"--out {out} already holds a run ({', '.join(held)}): continue it with --resume, "
            "or start over with --overwrite"
        )
    return path


def _check_device(name: str) -> None:
    """Refuse a device this machine does not have (the name itself is TrainConfig's to check)."""
    import torch

    dev = torch.device(name)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise _Exit(f"--device {name}: no CUDA GPU is available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= count:
            raise _Exit(f"--device {name}: {count} GPU(s) visible, cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise _Exit(f"--device {name}: MPS is not available on this machine or build of torch")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextmanager
def _replacing(out: Path, enabled: bool) -> Iterator[None]:
    """With ``--overwrite``: once the new run has saved a checkpoint, drop the old outputs.

    Files the new run rewrote are kept; the old run's others (a ``samples.png`` that a run
    with ``--method noise`` does not write, ...) are removed, so the folder describes one run.
    Before the new checkpoint nothing is touched: an early failure leaves the old run whole.
    """
    before = {name: _stamp(out / name) for name in RUN_OUTPUTS} if enabled else {}
    try:
        yield
    finally:
        ckpt = out / RUN_MARKERS[0]
        if enabled and _stamp(ckpt) not in (None, before[ckpt.name]):
            for name, stamp in before.items():
                if stamp is not None and name != ckpt.name and _stamp(out / name) == stamp:
                    (out / name).unlink(missing_ok=True)


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.data import DataFileError
    from risloss.training import TrainingInterrupted, train
    from risloss.training._plots import PLOT_HINT, have_matplotlib

    task = args.command
    main = _main_process()  # under torchrun only rank 0 prints; every rank gets the exit code
    quiet = args.quiet or not main

    def say(message: str) -> None:
        if not quiet:
            print(f"risloss {task}: {message}", file=sys.stderr, flush=True)

    problem = _check_run_args(args)
    if problem is not None:
        raise _Exit(problem)
    config = _config_from_args(args, task)
    out = _check_out(args)  # on every rank: they must all stop, or none
    _check_device(config.device)
    say(_start_line(config, args.out, args.resume))
    plot = have_matplotlib()
    if not plot:
        say(f"losses.png will be skipped: {PLOT_HINT}")
    ckpt = out / RUN_MARKERS[0]
    before = _stamp(ckpt)
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        with _replacing(out, args.overwrite and main), warnings.catch_warnings():
            if not plot:
                warnings.filterwarnings("ignore", message="losses.png skipped")
            metrics = train(config, out, resume=args.resume, progress=not quiet, log=log)
    except TrainingInterrupted as exc:
        raise _Exit(f"{exc}; continue with --resume", 130) from exc
    except KeyboardInterrupt as exc:
        if _stamp(ckpt) not in (None, before):
            detail = f"; the last checkpoint is {ckpt}: continue with --resume"
        elif before is not None:
            detail = f" before the first checkpoint; {out} is as it was"
        else:
            detail = " before the first checkpoint; nothing was saved"
        raise _Exit(f"interrupted{detail}", 130) from exc
    except ValueError as exc:
        options = _option_names(args.parser) if "parser" in args else {}
        raise _Exit(_in_option_terms(str(exc), options, everywhere=False)) from exc
    except DataFileError as exc:  # missing or unreadable data set files: status 1, as before
        raise _Exit(str(exc), 1) from exc
    except OSError as exc:  # the disk filled up, the folder went away, ...: not a bug of ours
        raise _Exit(str(exc), 1) from exc
    if main:
        for line in _summary(metrics, config):
            print(line)
        print(f"outputs: {args.out}")
    return 0


def _cmd_synthesize(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.data import DataFileError
    from risloss.training import TrainingInterrupted, synthesize
    from risloss.training._plots import PLOT_HINT, have_matplotlib

    def say(message: str) -> None:
        if not args.quiet:
            print(f"risloss synthesize: {message}", file=sys.stderr, flush=True)

    problem = _check_run_args(args)
    if problem is not None:
        raise _Exit(problem)
    # The student's fields keep the library's defaults (set on the parser); they are not used.
    config = _config_from_args(args, "quantize")
    out = _check_out(args)
    _check_device(config.device)
    say(
        f"{config.model}: {args.num_images} images, method {config.method}, {config.iters} "
        f"iterations, batch {config.batch_size}, {config.device} -> {args.out}"
        + (" (resuming)" if args.resume else "")
    )
    plot = have_matplotlib()
    if not plot:
        say(f"losses.png will be skipped: {PLOT_HINT}")
    ckpt = out / RUN_MARKERS[0]
    before = _stamp(ckpt)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        with _replacing(out, args.overwrite), warnings.catch_warnings():
            if not plot:
                warnings.filterwarnings("ignore", message="losses.png skipped")
            metrics = synthesize(
                config,
                out,
                num_images=args.num_images,
                resume=args.resume,
                progress=not args.quiet,
                log=log,
            )
    except TrainingInterrupted as exc:
        raise _Exit(f"{exc}; continue with --resume", 130) from exc
    except KeyboardInterrupt as exc:
        if _stamp(ckpt) not in (None, before):
            detail = f"; the last checkpoint is {ckpt}: continue with --resume"
        else:
            detail = " before the first checkpoint"
        raise _Exit(f"interrupted{detail}", 130) from exc
    except ValueError as exc:
        options = {**_option_names(args.parser), "num_images": "--num-images"}
        raise _Exit(_in_option_terms(str(exc), options, everywhere=False)) from exc
    except DataFileError as exc:
        raise _Exit(str(exc), 1) from exc
    except OSError as exc:
        raise _Exit(str(exc), 1) from exc
    images, trained = metrics["images"], metrics["synthesis"]
    print(
        f"teacher agreement: {100 * images['agreement']:.1f}% of {metrics['num_images']} images "
        f"({100 * trained['g_agree']:.1f}% over the last training iterations)"
    )
    print(f"outputs: {args.out} (synthetic/: PNG files per predicted class; synthetic.pt)")
    return 0


def _cmd_train_teacher(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss._checkpoint import CheckpointMismatchError
    from risloss.data import DataFileError
    from risloss.models._teacher import train_teacher

    if not args.out.strip():
        raise _Exit("--out: expected an output path, got an empty name")
    out = Path(args.out)
    _writable_folder(out.parent, f"--out {args.out}")
    done = [p for p in (out.with_suffix(".pt"), out.with_suffix(".json")) if p.exists()]
    if done and not args.overwrite:
        raise _Exit(
            f"--out {args.out}: {', '.join(map(str, done))} already exist(s); choose another "
            "--out, or replace them with --overwrite"
        )
    ckpt = out.with_suffix(".ckpt")
    before = _stamp(ckpt)
    try:
        train_teacher(
            args.arch,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            out=out,
            command="risloss " + shlex.join(argv),
            resume=not args.overwrite,
        )
    except CheckpointMismatchError as exc:
        names = {"batch_size": "--batch-size", "weight_decay": "weight decay"}
        differ = ", ".join(names.get(f, f if f == "dataset" else f"--{f}") for f in exc.fields)
        raise _Exit(
            f"--out {args.out}: {exc.path} holds an unfinished run with other settings "
            f"({differ}); continue it with those, or start over with --overwrite"
        ) from exc
    except KeyboardInterrupt as exc:
        if _stamp(ckpt) not in (None, before):
            detail = f"; the last finished epoch is in {ckpt}: run the same command to continue"
        else:
            detail = " before the end of the first epoch; nothing new was saved"
        raise _Exit(f"interrupted{detail}", 130) from exc
    except ValueError as exc:
        raise _Exit(str(exc)) from exc
    except DataFileError as exc:
        raise _Exit(str(exc), 1) from exc
    except OSError as exc:
        raise _Exit(str(exc), 1) from exc
    return 0


def _cmd_models(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.models import list_pretrained

    for name, meta in list_pretrained().items():
        print(
            f"{name}: {meta['arch']} on {meta['dataset']}, input {meta['input_shape']}, "
            f"test top-1 {meta['test_top1']}%"
        )
    return 0


def _version() -> str:
    import torch

    from risloss import __version__

    return f"risloss {__version__} (torch {torch.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="risloss",
        description="Data-free model compression with Robustness-Guided Image Synthesis (RIS).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "train-teacher",
        help="train a Fashion-MNIST teacher from a seed (reproduces the shipped weights)",
    )
    p.add_argument(
        "--arch", choices=["resnet20", "resnet8"], default="resnet20", help="default: resnet20"
    )
    p.add_argument("--epochs", type=_positive_int, default=15, help="default: 15")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="default: 128")
    p.add_argument(
        "--lr",
        type=_learning_rate,
        default=0.1,
        help="initial SGD learning rate, in (0, 10] (default: 0.1)",
    )
    p.add_argument("--seed", type=_seed, default=0, help=f"0..{2**32 - 1} (default: 0)")
    p.add_argument(
        "--out",
        default="teacher",
        help="output path without suffix: OUT.pt, OUT.json, and OUT.ckpt while training; an "
        "OUT.ckpt of the same settings is continued",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT.pt and OUT.json, and start over instead of continuing "
        "OUT.ckpt",
    )
    _add_debug(p)
    p.set_defaults(func=_cmd_train_teacher)

    q = sub.add_parser(
        "quantize",
        help="data-free quantization-aware training (default: W4A4 RIS on the shipped teacher)",
    )
    _add_run_options(q, "quantize")
    q.set_defaults(func=_cmd_run, parser=q)

    dist = sub.add_parser(
        "distill",
        help="data-free knowledge distillation into a smaller student (default: ResNet-8)",
    )
    _add_run_options(dist, "distill")
    dist.set_defaults(func=_cmd_run, parser=dist)

    pr = sub.add_parser(
        "prune",
        help="prune a copy of the teacher, then recover it by data-free distillation",
    )
    _add_run_options(pr, "prune")
    pr.set_defaults(func=_cmd_run, parser=pr)

    syn = sub.add_parser(
        "synthesize",
        help="train a generator on the teacher and write a synthetic calibration set",
    )
    syn.add_argument(
        "--num-images",
        type=_positive_int,
        default=512,
        metavar="N",
        help="images to write, >= 1 (default: 512)",
    )
    _add_run_options(syn, "synthesize")
    # The student's settings, which synthesize does not use, as the library's defaults.
    syn.set_defaults(
        func=_cmd_synthesize,
        parser=syn,
        w_bits=4,
        a_bits=4,
        first_last_bits=None,
        warmup=0,
        lr_student=None,
        eval_every=0,
        eval_limit=None,
        kd_temperature=1.0,
        kd_weight=1.0,
        ce_weight=0.0,
        local_batch_statistics=False,
    )

    m = sub.add_parser("models", help="list the shipped teachers")
    m.set_defaults(func=_cmd_models)
    return parser


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``risloss`` command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a mistake the user can fix (one line on standard
        error, no traceback unless ``--debug`` or ``RISLOSS_DEBUG=1``), 1 for missing or
        unreadable data-set files or a failed write (a full disk; one line too), 130 after
        Ctrl-C.

    Example:
        >>> from risloss.cli import main
        >>> main(["quantize", "--batch-size", "1"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.getcwd() not in sys.path and "" not in sys.path:
        # --model/--data package.module:factory: a module in the working folder is found, as
        # Python finds one beside a script it runs (the library never edits sys.path itself).
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line argparse error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args, argv))
    except _Exit as exc:
        if _debug(args):
            raise
        if _main_process():
            kind = "" if exc.code == 130 else "error: "
            print(f"risloss {args.command}: {kind}{exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        if _debug(args):
            raise
        if _main_process():
            print(f"risloss {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
