"""The ``risloss`` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from risloss.training import TrainConfig

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_train_teacher(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.models._teacher import train_teacher

    train_teacher(
        args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        out=args.out,
        command="risloss " + shlex.join(argv),
    )
    return 0


def _bits(text: str) -> int:
    value = _positive_int(text)
    if not 2 <= value <= 16:
        raise argparse.ArgumentTypeError(f"expected an integer in 2..16, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _device(text: str) -> str:
    if text == "cpu" or text == "cuda" or text.startswith("cuda:") or text == "mps":
        return text
    raise argparse.ArgumentTypeError(f"expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {text!r}")


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
    import math

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


def _model_name(text: str) -> str:
    """A shipped name (checked against the shipped teachers later) or ``module:factory``."""
    if ":" in text:
        module, _, factory = text.partition(":")
        if not module or not factory:
            raise argparse.ArgumentTypeError(f"expected 'package.module:factory', got {text!r}")
    return text


def _unknown_teacher(model: str) -> str | None:
    from risloss.models import list_pretrained

    shipped = sorted(list_pretrained())
    if ":" in model or model in shipped:
        return None
    return (
        f"--model: expected one of the shipped teachers {shipped} or "
        f"'package.module:factory', got {model!r}"
    )


def _add_run_options(p: argparse.ArgumentParser, task: str) -> None:
    from risloss.models import DEFAULT_TEACHER
    from risloss.training import METHODS, SYNTHESIS_METHODS, TrainConfig

    d = TrainConfig()
    student = task != "synthesize"  # synthesize trains only the generator
    p.add_argument(
        "--model",
        type=_model_name,
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
            choices=("resnet8", "resnet20"),
            default=d.student,
            help=f"architecture of the student (default: {d.student})",
        )
    if task == "prune":
        p.add_argument(
            "--sparsity",
            type=_fraction,
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
        p.add_argument("--w-bits", type=_bits, default=4, help="weight bits, 2..16 (default: 4)")
        p.add_argument(
            "--a-bits", type=_bits, default=4, help="activation bits, 2..16 (default: 4)"
        )
    elif student:
        p.add_argument(
            "--w-bits",
            type=_bits,
            default=None,
            help="also quantize weights to this width, 2..16 (with --a-bits; default: off)",
        )
        p.add_argument(
            "--a-bits",
            type=_bits,
            default=None,
            help="also quantize activations to this width, 2..16 (with --w-bits; default: off)",
        )
    if student:
        p.add_argument(
            "--first-last-bits",
            type=_bits,
            default=None,
            help="bits of the first and last layer (default: as the rest)",
        )
    p.add_argument(
        "--iters",
        type=_positive_int,
        default=d.iters,
        help=f"total iterations (default: {d.iters})",
    )
    if student:
        p.add_argument(
            "--warmup",
            type=_non_negative_int,
            default=d.warmup,
            help=f"generator-only warm-up iterations (default: {d.warmup})",
        )
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help=f"default: {d.batch_size}"
    )
    if student:
        p.add_argument(
            "--lr-student",
            type=_positive_float,
            default=None,
            help=f"default: {TrainConfig(task=cast(Any, task)).lr_student}",
        )
    p.add_argument(
        "--lr-generator",
        type=_positive_float,
        default=d.lr_generator,
        help=f"default: {d.lr_generator}",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--out", default=f"runs/{task}", help=f"output folder (default: runs/{task})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--checkpoint-every", type=_positive_int, default=d.checkpoint_every)
    if student:
        p.add_argument(
            "--eval-every",
            type=_non_negative_int,
            default=0,
            help="test evaluations during training (0: at the end only)",
        )
        p.add_argument(
            "--eval-limit",
            type=_positive_int,
            default=None,
            help="evaluate on the first N test images only (default: all)",
        )
    _add_objective_options(p, student=student)
    if student:
        p.add_argument(
            "--local-batch-statistics",
            action="store_true",
            help="under torchrun: BatchNorm statistics (generator, distillation student, BNS "
            "loss) over each process's batch instead of the global batch",
        )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no messages")


# Options of the generator objective (RISConfig field, option, help), in a group of their own.
_RIS_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("bns_weight", "--bns-weight", "beta, weight of the BatchNorm-statistics loss"),
    ("robustness_weight", "--robustness-weight", "alpha, weight of the robustness loss"),
    ("diversity_weight", "--diversity-weight", "gamma, weight of the correlation penalty"),
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
    ("soft_label_classes", "--soft-label-classes", "classes mixed in a soft label"),
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
                type=_positive_int if is_int else _non_negative_float,
                metavar="N" if is_int else "X",
                default=default,
                help=f"{text} (default: {default})",
            )
    if not student:
        return
    t = TrainConfig()
    g2 = p.add_argument_group("student loss")
    for option, kind, text in (
        ("--kd-temperature", _positive_float, "distillation temperature"),
        ("--kd-weight", _non_negative_float, "weight of the distillation loss"),
        ("--ce-weight", _non_negative_float, "weight of the cross-entropy on generator labels"),
    ):
        default = getattr(t, option[2:].replace("-", "_"))
        g2.add_argument(
            option, metavar="X", type=kind, default=default, help=f"{text} (default: {default})"
        )


def _check_run_args(args: argparse.Namespace) -> str | None:
    """Errors that involve several options, named as on the command line."""
    if (args.w_bits is None) != (args.a_bits is None):
        return "--w-bits and --a-bits must be given together"
    if args.first_last_bits is not None and args.w_bits is None:
        return "--first-last-bits needs --w-bits and --a-bits"
    if ":" in args.model and args.weights is None:
        return f"--model {args.model!r} is a package.module:factory, so --weights FILE is required"
    if ":" not in args.model and args.weights is not None:
        return "--weights is only used with a package.module:factory --model"
    if args.ris_robustness_weight > 0 and not (
        args.ris_input_perturbation or args.ris_weight_perturbation
    ):
        return (
            "--no-input-perturbation and --no-weight-perturbation together need "
            "--robustness-weight 0"
        )
    if args.weights is not None:
        from pathlib import Path

        if not Path(args.weights).is_file():
            return f"--weights: file {args.weights!r} does not exist"
    return None


def _config_from_args(args: argparse.Namespace, task: str) -> TrainConfig:
    from risloss.training import RISConfig, TrainConfig

    d = TrainConfig()
    return TrainConfig(
        task=cast(Any, task),
        method=args.method,
        model=args.model,
        weights=args.weights,
        data=args.data,
        student=getattr(args, "student", d.student),
        w_bits=args.w_bits,
        a_bits=args.a_bits,
        first_last_bits=args.first_last_bits,
        sparsity=getattr(args, "sparsity", d.sparsity),
        structured=getattr(args, "structured", d.structured),
        iters=args.iters,
        warmup=args.warmup,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        lr_generator=args.lr_generator,
        **({} if args.lr_student is None else {"lr_student": args.lr_student}),
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_limit=args.eval_limit,
        kd_temperature=args.kd_temperature,
        kd_weight=args.kd_weight,
        ce_weight=args.ce_weight,
        ris=RISConfig(**{name: getattr(args, f"ris_{name}") for name, _, _ in _RIS_OPTIONS}),
        global_batch_statistics=not args.local_batch_statistics,
        image_size=getattr(args, "image_size", d.image_size),
        normalize=getattr(args, "normalize", d.normalize),
    )


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


def _main_process() -> bool:
    """Whether this is rank 0 of a torchrun launch (or not launched by torchrun at all)."""
    import os

    return os.environ.get("RANK", "0") in ("0", "")


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.data import DataFileError
    from risloss.training import TrainingInterrupted, train

    task = args.command
    main = _main_process()  # under torchrun only rank 0 prints; every rank gets the exit code

    def say(message: str) -> None:
        if main:
            print(f"risloss {task}: {message}", file=sys.stderr)

    problem = _check_run_args(args)
    if problem is not None:
        say(f"error: {problem}")
        return 2
    try:
        config = _config_from_args(args, task)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    problem = _unknown_teacher(config.model)
    if problem is not None:
        say(f"error: {problem}")
        return 2
    quiet = args.quiet or not main
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        metrics = train(
            config,
            args.out,
            resume=args.resume,
            progress=False if quiet else None,
            log=log,
        )
    except TrainingInterrupted as exc:
        say(f"{exc}; continue with --resume")
        return 130
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    except DataFileError as exc:
        say(f"error: {exc}")
        return 1
    if main:
        for line in _summary(metrics, config):
            print(line)
        print(f"outputs: {args.out}")
    return 0


def _cmd_synthesize(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.data import DataFileError
    from risloss.training import TrainingInterrupted, synthesize

    def say(message: str) -> None:
        print(f"risloss synthesize: {message}", file=sys.stderr)

    problem = _check_run_args(args)
    config = None
    if problem is None:
        try:  # the student's fields keep the defaults set on the parser; they are not used
            config = _config_from_args(args, "quantize")
        except ValueError as exc:
            problem = str(exc)
        else:
            problem = _unknown_teacher(config.model)
    if problem is not None or config is None:
        say(f"error: {problem}")
        return 2
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        metrics = synthesize(
            config,
            args.out,
            num_images=args.num_images,
            resume=args.resume,
            progress=False if args.quiet else None,
            log=log,
        )
    except TrainingInterrupted as exc:
        say(f"{exc}; continue with --resume")
        return 130
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    except DataFileError as exc:
        say(f"error: {exc}")
        return 1
    images, trained = metrics["images"], metrics["synthesis"]
    print(
        f"teacher agreement: {100 * images['agreement']:.1f}% of {metrics['num_images']} images "
        f"({100 * trained['g_agree']:.1f}% over the last training iterations)"
    )
    print(f"outputs: {args.out} (synthetic/: PNG files per predicted class; synthetic.pt)")
    return 0


def _cmd_models(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.models import list_pretrained

    for name, meta in list_pretrained().items():
        print(
            f"{name}: {meta['arch']} on {meta['dataset']}, input {meta['input_shape']}, "
            f"test top-1 {meta['test_top1']}%"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="risloss",
        description="Data-free model compression with Robustness-Guided Image Synthesis (RIS).",
    )
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
        "--lr", type=_positive_float, default=0.1, help="initial SGD learning rate (default: 0.1)"
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="default: 0")
    p.add_argument("--out", default="teacher", help="output path without suffix (.pt, .json)")
    p.set_defaults(func=_cmd_train_teacher)

    q = sub.add_parser(
        "quantize",
        help="data-free quantization-aware training (default: W4A4 RIS on the shipped teacher)",
    )
    _add_run_options(q, "quantize")
    q.set_defaults(func=_cmd_run)

    dist = sub.add_parser(
        "distill",
        help="data-free knowledge distillation into a smaller student (default: ResNet-8)",
    )
    _add_run_options(dist, "distill")
    dist.set_defaults(func=_cmd_run)

    pr = sub.add_parser(
        "prune",
        help="prune a copy of the teacher, then recover it by data-free distillation",
    )
    _add_run_options(pr, "prune")
    pr.set_defaults(func=_cmd_run)

    syn = sub.add_parser(
        "synthesize",
        help="train a generator on the teacher and write a synthetic calibration set",
    )
    syn.add_argument(
        "--num-images",
        type=_positive_int,
        default=512,
        metavar="N",
        help="images to write (default: 512)",
    )
    _add_run_options(syn, "synthesize")
    # The student's settings, which synthesize does not use, as the library's defaults.
    syn.set_defaults(
        func=_cmd_synthesize,
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args, argv))


if __name__ == "__main__":
    sys.exit(main())
