"""The ``risloss`` command line.

A mistake the user can fix (a bad option, an unreadable file, an output folder that cannot be
written or already holds a run) ends in one line on standard error and exit status 2, found
before any work starts wherever that is possible; ``--debug`` (or ``RISLOSS_DEBUG=1`` in the
environment) shows the traceback instead. Ctrl-C exits with status 130: during training after
saving a checkpoint, before it with nothing written.

The options of the commands that run a :class:`~risloss.training.TrainConfig` are generated
from its fields and those of :class:`~risloss.training.RISConfig` (see
:mod:`risloss._cli_options`): an option left out is left to the configuration's own default.
The values go to the configuration unchecked; its errors name the field (``batch_size``), and
the message names the option (``--batch-size``) instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from risloss._cli_folders import (
    RUN_MARKERS,
    check_device,
    check_out,
    stamp,
)
from risloss._cli_folders import CommandError as _Exit
from risloss._cli_options import (
    TRAIN_CONVERT,
    TRAIN_SPECIAL,
    add_settings,
    in_option_terms,
    option_names,
    ruled,
    settings_of,
    whole_number,
)
from risloss._cli_teacher import add_models, add_train_teacher
from risloss._streams import add_debug, debug_requested, guard_streams, say
from risloss.export import add_export_command

if TYPE_CHECKING:
    from risloss._outputs import OutputFolder
    from risloss.training import TrainConfig

__all__ = ["build_parser", "main"]

"""Set to ``1`` to see the traceback behind an error message."""

_CONFIG, _RIS = "config.", "ris."  # the dest prefixes of TrainConfig's and RISConfig's options
_RIS_TITLE = (
    "generator objective (CE + beta*BNS + alpha*robustness + gamma*diversity; "
    "the RIS terms apply with --method ris)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage first) and no
    abbreviated options (``--ov`` is not ``--overwrite``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The commands. Each entry of _COMMANDS adds one subcommand to the subparsers.


@attrs.frozen
class _RunCommand:
    """A command that runs a :class:`~risloss.training.TrainConfig` of ``task``.

    ``fixed``: fields the command sets itself; ``choices``: the allowed values of fields where
    the command takes fewer than the field's rule (read when the parser is built); ``options``:
    adds the command's options that are not configuration fields.
    """

    name: str
    help: str
    task: str
    run: Callable[[argparse.Namespace, Sequence[str]], int]
    fixed: Mapping[str, Any] = attrs.field(factory=dict)
    choices: Callable[[], Mapping[str, tuple[str, ...]]] = dict
    options: Callable[[argparse.ArgumentParser], object] = lambda p: None


def _add_run(spec: _RunCommand, sub: Any) -> None:
    from risloss.training import RISConfig, TrainConfig

    p = sub.add_parser(spec.name, help=spec.help)
    spec.options(p)
    sample = TrainConfig(task=spec.task, **spec.fixed)  # type: ignore[arg-type]
    add_settings(
        p, TrainConfig, spec.name, sample=sample, prefix=_CONFIG, choices=spec.choices(),
        special=TRAIN_SPECIAL,
    )  # fmt: skip
    p.add_argument(
        "--out", default=f"runs/{spec.name}", help="output folder (default: %(default)s)"
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output folder that holds a run (or other files); the earlier "
        "run's files stay as they are until the new run has finished, then the new run's "
        "files replace them (files no run wrote are kept)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress report and no messages")
    add_debug(p)
    add_settings(
        p, RISConfig, spec.name, sample=sample.ris, prefix=_RIS, title=_RIS_TITLE
    )  # fmt: skip
    p.set_defaults(func=spec.run, parser=p, spec=spec)


def _config_from_args(args: argparse.Namespace, task: str | None = None) -> TrainConfig:
    """The run's configuration: the options given, by field name, and the command's own
    settings; every other field keeps the configuration's default. A bad value raises
    :class:`_Exit` naming the option."""
    from risloss.training import TrainConfig, ris_for

    spec: _RunCommand = args.spec
    try:
        # the options given, over the task's own default objective (ris_for)
        ris = attrs.evolve(ris_for(task or spec.task), **settings_of(args, _RIS))
    except ValueError as exc:
        names = option_names(args.parser, _RIS)
        raise _Exit(in_option_terms(str(exc), names, everywhere=True)) from exc
    values = settings_of(args, _CONFIG)
    try:
        for name in values.keys() & TRAIN_CONVERT.keys():
            values[name] = TRAIN_CONVERT[name](values[name])
        return TrainConfig(task=task or spec.task, **spec.fixed, **values, ris=ris)  # type: ignore[arg-type]
    except ValueError as exc:
        names = option_names(args.parser, _CONFIG)
        raise _Exit(in_option_terms(str(exc), names, everywhere=True)) from exc


def _check_config(config: TrainConfig) -> None:
    """Options that the configuration accepts but that do nothing: the user meant more."""
    if config.first_last_bits is not None and config.w_bits is None:
        raise _Exit("--first-last-bits needs --w-bits and --a-bits")
    if ":" not in config.model and config.weights is not None:
        raise _Exit("--weights is only used with a package.module:factory --model")


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


def _start_line(config: TrainConfig, args: argparse.Namespace) -> str:
    """What the run is about to do: model, task, bits, method, iterations, output folder."""
    resuming = " (resuming)" if args.resume else ""
    if args.command == "synthesize":
        return (
            f"{config.model}: {args.num_images} images, method {config.method}, {config.iters} "
            f"iterations, batch {config.batch_size}, {config.device} -> {args.out}{resuming}"
        )
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
    line = (
        f"{what}, method {config.method}, {config.iters} iterations "
        f"({config.warmup} warm-up), batch {config.batch_size}, {config.device} -> {args.out}"
        + resuming
    )
    minutes = _CPU_MINUTES.get(config.task)
    if minutes and config.device == "cpu" and config == _default_of(config):
        line += f"; the default budget takes up to {minutes} minutes on 2 CPU cores"
    return line


# The time a default run may take on 2 CPU cores: `risloss distill` (1,500 iterations) trained
# for 19.3 minutes with both cores (benchmarks/results/distill-cli/default.json).
_CPU_MINUTES = {"distill": 20}


def _default_of(config: TrainConfig) -> TrainConfig:
    """``config`` with every budget and student setting at its task's default, the teacher,
    data, method, seed and output choices kept: whether the run is the default budget."""
    from risloss.training import TrainConfig

    keep = ("task", "method", "model", "weights", "data", "device", "seed", "w_bits", "a_bits")
    return TrainConfig(**{k: getattr(config, k) for k in keep})


def _main_process() -> bool:
    """Whether this is rank 0 of a torchrun launch (or not launched by torchrun at all).

    Only a launch of several processes (``WORLD_SIZE`` above 1) has other ranks; a stray
    ``RANK`` (``1``, ``abc``) without it does not silence the messages.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or "1")
        rank = int(os.environ.get("RANK", "0") or "0")
    except ValueError:
        return True
    return world <= 1 or rank == 0


def _claim(args: argparse.Namespace, argv: Sequence[str], out: Path) -> OutputFolder | None:
    """The main process claims the output folder (owned, locked; see :mod:`risloss._outputs`);
    the other processes of a torchrun launch write nothing and claim nothing."""
    from risloss._outputs import OutputFolderError, claim_output

    if not _main_process():
        return None
    try:
        return claim_output(
            out,
            args.command,
            overwrite=args.overwrite,
            resume=args.resume,
            command="risloss " + shlex.join(argv),
            label=f"--out {args.out}",
        )
    except OutputFolderError as exc:
        raise _Exit(str(exc)) from exc


def _stays(folder: OutputFolder | None) -> str:
    """What became of the output folder after a run that stopped: ``"; <one line>"``, or
    nothing where the run wrote nothing into a folder it had to itself."""
    outcome = folder.outcome if folder is not None else None
    if not outcome or (not folder.staged and "nothing was written" in outcome):  # type: ignore[union-attr]
        return ""
    return f"; {outcome}"


def _running(
    args: argparse.Namespace,
    argv: Sequence[str],
    work: Callable[[TrainConfig, Path, Callable[[str], None] | None], dict[str, Any]],
) -> tuple[TrainConfig, dict[str, Any]]:
    """Check the options, the output folder and the device, claim the folder, then run
    ``work(config, where, log)`` into it and commit; every failure becomes an :class:`_Exit`
    (Ctrl-C: status 130) that says what became of the folder."""
    from risloss._outputs import OutputCommitError
    from risloss.data import DataFileError
    from risloss.training import TrainingInterrupted
    from risloss.training._plots import PLOT_HINT, have_matplotlib

    main = _main_process()  # under torchrun only rank 0 prints; every rank gets the exit code
    quiet = args.quiet or not main

    def say_line(message: str) -> None:
        say(message)

    log = None if quiet else say_line
    config = _config_from_args(args)
    _check_config(config)
    _check_memory_early(config, args)
    # On every rank: they must all stop, or none.
    out = check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    check_device(config.device)
    folder = _claim(args, argv, out)
    where = out if folder is None else folder.path
    if log:
        log(f"risloss {args.command}: {_start_line(config, args)}")
    plot = have_matplotlib()
    if log and not plot:
        log(f"risloss {args.command}: losses.png will be skipped: {PLOT_HINT}")
    ckpt = where / RUN_MARKERS[0]
    before = stamp(ckpt)
    try:
        with folder or contextlib.nullcontext(), warnings.catch_warnings():
            if not plot:
                warnings.filterwarnings("ignore", message="losses.png skipped")
            result = config, work(config, where, log)
        return result
    except TrainingInterrupted as exc:
        raise _Exit(f"{exc}; continue with --resume{_stays(folder)}", 130) from exc
    except KeyboardInterrupt as exc:
        if stamp(ckpt) not in (None, before):
            detail = f"; the last checkpoint is {ckpt}: continue with --resume"
        elif before is not None or (folder is not None and folder.staged):
            detail = " before the first checkpoint"
        else:
            detail = " before the first checkpoint; nothing was saved"
        raise _Exit(f"interrupted{detail}{_stays(folder)}", 130) from exc
    except OutputCommitError as exc:
        raise _Exit(str(exc), 1) from exc
    except ValueError as exc:
        names = {**option_names(args.parser, _RIS), **option_names(args.parser, _CONFIG)}
        names["num_images"] = "--num-images"
        listed = str(exc).startswith("resume: the checkpoint was made with other settings")
        message = in_option_terms(str(exc), names, everywhere=listed)
        if "has no BatchNorm layer with running statistics" in message:
            message = message.split("; its modules are", 1)[0] + (
                ", which the generator's BatchNorm-statistics loss reads: without it, use "
                "--bns-weight 0, or --method noise (no generator)"
            )
        raise _Exit(message + _stays(folder)) from exc
    except (DataFileError, OSError) as exc:  # unreadable data, a full disk: status 1
        raise _Exit(f"{exc}{_stays(folder)}", 1) from exc


def _check_memory_early(config: TrainConfig, args: argparse.Namespace) -> None:
    """Refuse, before loading anything, settings whose buffers cannot fit the memory: for a
    shipped teacher its input shape is known; for another model the run checks again once
    the shape is known (before any training)."""
    from risloss._resources import check_memory
    from risloss.models import list_pretrained
    from risloss.training import ReplayPool

    meta = list_pretrained().get(config.model)
    if meta is None:
        return
    c, h, w = meta["input_shape"]
    sized = isinstance(config.image_size, int) and not isinstance(config.image_size, bool)
    if sized:
        h = w = int(config.image_size)  # type: ignore[arg-type]
    synthesize = args.command == "synthesize"
    classes = int(meta["num_classes"])
    budget = config.replay_memory_mb
    replay = ReplayPool.capacity_for(config.replay_size, budget, (c, h, w), classes)
    try:
        check_memory(
            image_shape=(c, h, w),
            num_classes=int(meta["num_classes"]),
            batch_size=config.batch_size,
            replay_size=0 if synthesize else replay,
            num_images=getattr(args, "num_images", 0) if synthesize else 0,
            generator=config.method in ("ris", "gdfq"),
            image_size=h if sized else None,
            device=config.device,
        )
    except ValueError as exc:
        raise _Exit(str(exc)) from exc


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.training import train

    def work(config: TrainConfig, out: Path, log: Any) -> dict[str, Any]:
        return train(config, out, resume=args.resume, progress=log is not None, log=log)

    config, metrics = _running(args, argv, work)
    if _main_process():
        for line in _summary(metrics, config):
            print(line)
        print(f"outputs: {args.out}")
    return 0


def _cmd_synthesize(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.training import synthesize

    def work(config: TrainConfig, out: Path, log: Any) -> dict[str, Any]:
        return synthesize(
            config, out, num_images=args.num_images, resume=args.resume,
            progress=log is not None, log=log,
        )  # fmt: skip

    _, metrics = _running(args, argv, work)
    images, trained = metrics["images"], metrics["synthesis"]
    print(
        f"teacher agreement: {100 * images['agreement']:.1f}% of {metrics['num_images']} images "
        f"({100 * trained['g_agree']:.1f}% over the last training iterations)"
    )
    print(f"outputs: {args.out} (synthetic/: PNG files per predicted class; synthetic.pt)")
    return 0


def _synthesis_choices() -> Mapping[str, tuple[str, ...]]:
    from risloss.training import SYNTHESIS_METHODS

    return {"method": SYNTHESIS_METHODS}


def _add_num_images(p: argparse.ArgumentParser) -> None:
    from risloss._validators import int_in

    p.add_argument(
        "--num-images",
        type=ruled(whole_number, int_in(1)),
        default=512,
        metavar="N",
        help="images to write, >= 1 (default: %(default)s)",
    )


_COMMANDS: list[Callable[[Any], None]] = [
    add_train_teacher,
    partial(_add_run, _RunCommand(
        "quantize", "data-free quantization-aware training (default: W4A4 RIS on the shipped "
        "teacher)", "quantize", _cmd_run,
    )),
    partial(_add_run, _RunCommand(
        "distill", "data-free knowledge distillation into a smaller student (default: ResNet-8)",
        "distill", _cmd_run,
    )),
    partial(_add_run, _RunCommand(
        "prune", "prune a copy of the teacher, then recover it by data-free distillation",
        "prune", _cmd_run,
    )),
    # synthesize trains the generator alone, every iteration: no warm-up, and the student's
    # settings (those of task="quantize") unused.
    partial(_add_run, _RunCommand(
        "synthesize", "train a generator on the teacher and write a synthetic calibration set",
        "quantize", _cmd_synthesize, fixed={"warmup": 0},
        choices=_synthesis_choices,
        options=_add_num_images,
    )),
    add_models,
    add_export_command,
]  # fmt: skip
"""The subcommands, in the order ``--help`` lists them: each entry adds one to the
subparsers (``add(subparsers)``, which sets ``func(args, argv) -> exit status``)."""


def _version() -> str:
    import torch

    from risloss._version import __version__

    return f"risloss {__version__} (torch {torch.__version__})"


def build_parser() -> argparse.ArgumentParser:
    """The ``risloss`` parser: one subcommand per entry of the command list.

    Example:
        >>> from risloss.cli import build_parser
        >>> args = build_parser().parse_args(["quantize", "--w-bits", "3"])
        >>> args.command, getattr(args, "config.w_bits")
        ('quantize', 3)
    """
    parser = _Parser(
        prog="risloss",
        description="Data-free model compression with Robustness-Guided Image Synthesis (RIS).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


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
    with guard_streams():
        try:  # building the parser imports torch: a Ctrl-C then is one line too
            parser = build_parser()
        except KeyboardInterrupt:
            if debug_requested():
                raise
            say("risloss: interrupted while starting; nothing was written")
            return 130
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a one-line argparse error
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return _dispatch(args, argv)


def _dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the command; its failures as one line and an exit status."""
    try:
        return int(args.func(args, argv))
    except _Exit as exc:
        if debug_requested(args):
            raise
        if _main_process():
            kind = "" if exc.code == 130 else "error: "
            say(f"risloss {args.command}: {kind}{exc}")
        return exc.code
    except KeyboardInterrupt:
        if debug_requested(args):
            raise
        if _main_process():
            say(f"risloss {args.command}: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
