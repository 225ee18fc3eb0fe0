"""The ``train-teacher`` and ``models`` commands of the ``risloss`` command line: the shipped
teachers, listed and reproduced from a seed."""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from risloss._cli_folders import CommandError as _Exit
from risloss._cli_folders import stamp, writable_folder
from risloss._cli_options import number, ruled, whole_number
from risloss._streams import add_debug

__all__ = ["add_models", "add_train_teacher"]


def _cmd_train_teacher(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss._checkpoint import CheckpointMismatchError
    from risloss.data import DataFileError
    from risloss.models._teacher import train_teacher

    if not args.out.strip():
        raise _Exit("--out: expected an output path, got an empty name")
    out = Path(args.out)
    if out.name in ("", ".", "..") or args.out.endswith(("/", os.sep)):
        raise _Exit(
            f"--out {args.out}: expected a path and a file name without suffix, such as "
            "teachers/resnet8 (which writes teachers/resnet8.pt and teachers/resnet8.json), "
            "not a folder"
        )
    writable_folder(out.parent, f"--out {args.out}")
    done = [p for p in (out.with_suffix(".pt"), out.with_suffix(".json")) if p.exists()]
    if done and not args.overwrite:
        raise _Exit(
            f"--out {args.out}: {', '.join(map(str, done))} already exist(s); choose another "
            "--out, or replace them with --overwrite"
        )
    ckpt = out.with_suffix(".ckpt")
    before = stamp(ckpt)
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
            dataset=args.dataset,
            data_root=args.data_root,
            precision=args.precision,
            device=args.device,
        )
    except CheckpointMismatchError as exc:
        names = {"batch_size": "--batch-size", "weight_decay": "weight decay"}
        differ = ", ".join(names.get(f, f"--{f}") for f in exc.fields)
        raise _Exit(
            f"--out {args.out}: {exc.path} holds an unfinished run with other settings "
            f"({differ}); continue it with those, or start over with --overwrite"
        ) from exc
    except KeyboardInterrupt as exc:
        if stamp(ckpt) not in (None, before):
            detail = f"; the last finished epoch is in {ckpt}: run the same command to continue"
        else:
            detail = " before the end of the first epoch; nothing new was saved"
        raise _Exit(f"interrupted{detail}", 130) from exc
    except ValueError as exc:
        raise _Exit(str(exc)) from exc
    except (DataFileError, OSError) as exc:
        raise _Exit(str(exc), 1) from exc
    return 0


def add_train_teacher(sub: Any) -> None:
    from risloss._validators import int_in, number_in
    from risloss.models import ARCHITECTURES
    from risloss.models._teacher import PRECISIONS, TEACHER_DATASETS, train_teacher

    p = sub.add_parser(
        "train-teacher",
        help="train a Fashion-MNIST or CIFAR-10 teacher from a seed (reproduces the shipped "
        "weights)",
    )
    default = {k: v.default for k, v in inspect.signature(train_teacher).parameters.items()}
    p.add_argument(
        "--arch",
        choices=tuple(ARCHITECTURES),
        default=default["arch"],
        help="the architecture (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        choices=TEACHER_DATASETS,
        default=default["dataset"],
        help="the data set (default: %(default)s); cifar10 reads torchvision's files or the "
        "images as files in train/<class>/ and test/<class>/ folders",
    )
    p.add_argument(
        "--data-root",
        default=None,
        metavar="FOLDER",
        help="the data set's folder (default: RISLOSS_FASHION_MNIST or the Debian package's "
        "folder; RISLOSS_CIFAR10 or data/cifar10)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default["precision"],
        help="bf16: train under bfloat16 autocast, about twice as fast on a CPU with AVX-512 "
        "BF16; the weights stay float32 (default: %(default)s)",
    )
    for option, parse, rule, text in (
        ("--epochs", whole_number, int_in(1), "passes over the training split"),
        ("--batch-size", whole_number, int_in(1), "images per step"),
        ("--lr", number, number_in(0.0, 10.0, open_low=True), "initial SGD learning rate"),
        ("--seed", whole_number, int_in(0, 2**32 - 1), "seed of the weights, order and crops"),
    ):
        p.add_argument(
            option,
            type=ruled(parse, rule),
            default=default[option[2:].replace("-", "_")],
            metavar="N" if parse is whole_number else "X",
            help=f"{text}: {rule.text} (default: %(default)s)",
        )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=default["device"],
        help="where to train (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default=default["out"],
        help="output path without suffix: OUT.pt, OUT.json, and OUT.ckpt while training; an "
        "OUT.ckpt of the same settings is continued",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT.pt and OUT.json, and start over instead of continuing "
        "OUT.ckpt",
    )
    add_debug(p)
    p.set_defaults(func=_cmd_train_teacher)


def _cmd_models(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from risloss.models import list_pretrained

    for name, meta in list_pretrained().items():
        print(
            f"{name}: {meta['arch']} on {meta['dataset']}, input {meta['input_shape']}, "
            f"test top-1 {meta['test_top1']}%"
        )
    return 0


def add_models(sub: Any) -> None:
    sub.add_parser("models", help="list the shipped teachers").set_defaults(func=_cmd_models)
