"""Export the student of a finished run: ``risloss export RUN --format onnx``.

:func:`export_run` reads a run folder written by ``risloss quantize``, ``prune`` or ``distill``
(or :func:`risloss.training.train`): its ``metrics.json`` (the run's configuration) and its
``student.pt`` (loaded with ``torch.load(..., weights_only=True)``). It rebuilds the student as
the run did and writes it with :func:`risloss.quant.export_onnx`: a quantized student with
QuantizeLinear/DequantizeLinear pairs, a pruned or distilled full-precision one as a plain float
graph. :func:`add_export_command` adds the ``export`` command to a command-line parser.

The export needs the optional ``onnx`` package (``pip install "risloss[export]"``, which also
brings ``onnxruntime`` to run the file); nothing here imports it before an export starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from risloss._streams import add_debug, debug_requested

__all__ = [
    "EXPORT_FORMATS",
    "add_export_command",
    "export_command",
    "export_run",
    "load_run_student",
]

EXPORT_FORMATS = ("onnx",)
"""The formats :func:`export_run` writes."""

_TASKS = ("quantize", "prune", "distill")


class _RunError(ValueError):
    """A run folder that cannot be exported (a usage mistake: exit status 2)."""


def _finished_run(run: Path) -> dict[str, Any]:
    """The ``config`` of the finished compression run in ``run``, or one line saying why not."""
    from risloss._checkpoint import FileContentError

    if not run.exists():
        raise _RunError(f"{run}: no such folder")
    if not run.is_dir():
        raise _RunError(
            f"{run} is a file; give the output folder of a quantize, prune or distill run"
        )
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        if (run / "checkpoint.pt").is_file():
            raise _RunError(
                f"{run} holds an unfinished run (checkpoint.pt, no metrics.json): continue it "
                "with --resume first"
            )
        raise _RunError(f"{run} holds no risloss run (no metrics.json)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FileContentError(f"cannot read {metrics_path}: {exc}") from exc
    config = metrics.get("config") if isinstance(metrics, dict) else None
    if not isinstance(config, dict):
        raise FileContentError(f"{metrics_path} has no 'config' entry: not written by a run")
    if not (run / "student.pt").is_file():
        if (run / "synthetic.pt").is_file():
            raise _RunError(
                f"{run} is a synthesize run: it holds synthetic images (synthetic.pt), no "
                "student to export"
            )
        raise _RunError(f"{run} holds no student.pt: not the folder of a finished run")
    task = config.get("task")
    if task not in _TASKS:
        raise _RunError(
            f"{run} is a run of task {task!r}; export takes a run of {', '.join(_TASKS)}"
        )
    return config


def _input_shape(config: dict[str, Any], meta: dict[str, Any]) -> tuple[int, int, int]:
    """``(C, H, W)`` of the run's inputs: a shipped teacher's record, else one test image."""
    shape = meta.get("input_shape")
    if shape is not None and config.get("image_size", "default") == "default":
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    from risloss.data import load_dataset

    normalize = config.get("normalize", "default")
    if isinstance(normalize, list):
        normalize = tuple(tuple(v) if isinstance(v, list) else v for v in normalize)
    test = load_dataset(
        config["data"],
        "test",
        image_size=config.get("image_size", "default"),
        normalize=normalize,
    )
    image = test[0][0]
    if image.dim() != 3:
        raise _RunError(f"expected (C, H, W) images, the run's data yield {tuple(image.shape)}")
    return (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))


def _student(run: Path, config: dict[str, Any]) -> tuple[Any, tuple[int, int, int]]:
    """The run's student with the weights of ``student.pt``, and its input shape."""
    import torch

    from risloss._checkpoint import load_state_dict_into
    from risloss.pruning import finalize_pruning
    from risloss.training._models import build_student, load_teacher

    teacher, meta = load_teacher(config["model"], config.get("weights"))
    shape = _input_shape(config, meta)
    num_classes = meta.get("num_classes")
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(teacher(torch.zeros(1, *shape)).shape[1])
    torch_state = torch.get_rng_state()
    try:  # a fresh distillation student draws initial weights: leave the caller's RNG alone
        student = build_student(
            teacher,
            task=config["task"],
            student=config.get("student", "resnet8"),
            num_classes=int(num_classes),
            in_channels=shape[0],
            image_size=shape[1],
            sparsity=config.get("sparsity", 0.0),
            structured=bool(config.get("structured", False)),
            w_bits=config.get("w_bits"),
            a_bits=config.get("a_bits"),
            first_last_bits=config.get("first_last_bits"),
            student_init=config.get("student_init", "random"),
        )
    finally:
        torch.set_rng_state(torch_state)
    if config["task"] == "prune":
        finalize_pruning(student)  # student.pt holds plain weights, not masks
    load_state_dict_into(student, run / "student.pt", f"the student of the run in {run}")
    return student.eval(), shape


def load_run_student(run_dir: str | os.PathLike[str]) -> Any:
    """The student of a finished quantize, prune or distill run, rebuilt and loaded.

    The model is rebuilt from the run's ``metrics.json`` configuration as the run built it (a
    copy of the teacher, quantized and pruned as configured, or a fresh distillation student)
    and gets the weights of ``student.pt`` (read with ``torch.load(..., weights_only=True)``);
    a quantized student comes with its frozen activation ranges. The caller's random state is
    left as it was.

    Args:
        run_dir: the run's output folder.

    Returns:
        The student (an ``nn.Module``) in eval mode, on the CPU.

    Raises:
        ValueError: a folder that does not hold a finished quantize, prune or distill run, or
            run files that cannot be read or do not fit (see :func:`export_run`).

    Example:
        >>> from risloss.export import load_run_student
        >>> student = load_run_student("runs/quantize")  # doctest: +SKIP
    """
    run = Path(run_dir)
    student, _ = _student(run, _finished_run(run))
    return student


def export_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    format: str = "onnx",
    overwrite: bool = False,
    int4: bool = True,
) -> Path:
    """Write the student of a finished quantize, prune or distill run as an ONNX file.

    The student is rebuilt from the run's ``metrics.json`` configuration as the run built it
    (a copy of the teacher, quantized and pruned as configured, or a fresh distillation
    student), its weights loaded from ``student.pt``, and written by
    :func:`risloss.quant.export_onnx` for inputs of the run's image shape, batch size free.

    Args:
        run_dir: the run's output folder.
        out: the file to write (default: ``RUN_DIR/student.onnx``).
        format: ``"onnx"``, the only format so far.
        overwrite: replace ``out`` if it exists (otherwise an existing file is refused).
        int4: store quantized tensors of 4 bits or fewer as ``int4`` / ``uint4``
            (see :func:`risloss.quant.export_onnx`).

    Returns:
        The path of the written file.

    Raises:
        ValueError: an unknown ``format``; a folder that does not hold a finished quantize,
            prune or distill run (no such folder, an unfinished or a synthesize run, another
            task); ``out`` exists and ``overwrite`` is false; a quantizer wider than 8 bits;
            a ``metrics.json`` or ``student.pt`` that cannot be read or does not fit (one line
            naming the file).
        ImportError: the ``onnx`` package is missing (the message says how to install it).
        risloss.data.DataFileError: the run's test data are needed for its input shape (a
            teacher of your own) and cannot be read.

    Example:
        >>> from risloss.export import export_run
        >>> export_run("runs/quantize")  # doctest: +SKIP
        PosixPath('runs/quantize/student.onnx')
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    for name, flag in (("overwrite", overwrite), ("int4", int4)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    run = Path(run_dir)
    config = _finished_run(run)
    target = run / "student.onnx" if out is None else Path(out)
    if not os.fspath(target).strip():
        raise _RunError("out: expected a file name, got an empty one")
    if target.is_dir():
        raise _RunError(f"{target} is a folder; give the file to write")
    if target.exists() and not overwrite:
        raise _RunError(f"{target} exists; replace it with --overwrite (overwrite=True)")
    from risloss.quant import export_onnx
    from risloss.quant._export import require_onnx

    require_onnx()
    import torch

    student, shape = _student(run, config)
    return export_onnx(student, torch.zeros(1, *shape), target, int4=int4)


def _describe(config: dict[str, Any]) -> str:
    w_bits, a_bits = config.get("w_bits"), config.get("a_bits")
    if w_bits is None or a_bits is None:
        return f"{config['task']} run, float32"
    edge = config.get("first_last_bits")
    edges = f", first/last layer {edge}-bit" if edge is not None else ""
    return f"{config['task']} run, W{w_bits}A{a_bits}{edges}"


def export_command(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``risloss export`` with parsed arguments (see :func:`add_export_command`).

    Errors end in one line on standard error: exit status 2 for a mistake in the command (a
    folder without a finished run, a run of another kind, an ``--out`` that exists without
    ``--overwrite``), 1 for a missing ``onnx`` package, unreadable run files or a failed write.
    ``--debug`` (or ``RISLOSS_DEBUG=1``) shows the traceback instead.

    Args:
        args: the parsed arguments: ``run``, ``format``, ``out``, ``overwrite``, ``int4``.
        argv: the command line (unused; the signature of the other commands).

    Returns:
        The exit status.
    """
    from risloss._checkpoint import FileContentError
    from risloss.data import DataFileError

    debug = debug_requested(args)
    try:
        path = export_run(
            args.run,
            args.out,
            format=args.format,
            overwrite=args.overwrite,
            int4=args.int4,
        )
        config = _finished_run(Path(args.run))
    except (FileContentError, ImportError, DataFileError, OSError) as exc:
        if debug:
            raise
        return _fail(exc, 1)
    except ValueError as exc:
        if debug:
            raise
        return _fail(exc, 2)
    size = path.stat().st_size
    print(
        f"risloss export: wrote {path} ({size / 1024:.1f} KiB; {_describe(config)})",
        file=sys.stderr,
        flush=True,
    )
    return 0


def _fail(exc: BaseException, code: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"risloss export: error: {message}", file=sys.stderr, flush=True)
    return code


def add_export_command(subparsers: Any) -> None:
    """Add the ``export`` command to the sub-command parsers of a command line.

    ``risloss export RUN [--format onnx] [--out FILE] [--overwrite] [--no-int4] [--debug]``;
    the command function is :func:`export_command` (set as the ``func`` default).

    Args:
        subparsers: what ``parser.add_subparsers()`` returned.

    Example:
        >>> import argparse
        >>> from risloss.export import add_export_command
        >>> parser = argparse.ArgumentParser(prog="risloss")
        >>> add_export_command(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["export", "runs/quantize", "--out", "q.onnx"])
        >>> args.run, args.format, args.out, args.overwrite, args.int4
        ('runs/quantize', 'onnx', 'q.onnx', False, True)
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write the student of a finished quantize, prune or distill run as an ONNX file",
        description=(
            "Write the student of a finished run as an ONNX file: a quantized student with "
            "QuantizeLinear/DequantizeLinear pairs, a full-precision one as a float graph. "
            'Needs the onnx package: pip install "risloss[export]".'
        ),
    )
    p.add_argument("run", metavar="RUN", help="the output folder of the run")
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="onnx",
        help="file format (default: onnx)",
    )
    p.add_argument(
        "--out", metavar="FILE", default=None, help="the file to write (default: RUN/student.onnx)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument(
        "--no-int4",
        dest="int4",
        action="store_false",
        help="keep tensors of 4 bits or fewer in 8-bit containers (opset 17) instead of "
        "int4/uint4 (opset 21), for runtimes without 4-bit types (a larger file)",
    )
    add_debug(p)
    p.set_defaults(func=export_command)
