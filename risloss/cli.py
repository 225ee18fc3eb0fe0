"""The ``risloss`` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

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
    p.add_argument("--arch", choices=["resnet20", "resnet8"], default="resnet20")
    p.add_argument("--epochs", type=_positive_int, default=15)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="teacher", help="output path without suffix (.pt, .json)")
    p.set_defaults(func=_cmd_train_teacher)
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
