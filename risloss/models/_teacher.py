"""Seeded training of the teachers shipped in the package.

Run ``risloss train-teacher --arch resnet20 --epochs 15`` (see ``risloss train-teacher --help``) to
reproduce a shipped teacher; the metadata file written next to the weights records the command and
the test accuracy it printed.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from risloss._checkpoint import (
    CheckpointMismatchError,
    FileContentError,
    atomic_save,
    load_checkpoint,
    state_dict_mismatch,
)
from risloss._eval import evaluate
from risloss._validators import check, int_in, one_of
from risloss.data import TensorImageDataset, load_dataset
from risloss.models._registry import ARCHITECTURES

__all__ = ["TEACHER_DATASETS", "train_teacher"]

_CKPT_KEYS = ("model", "opt", "sched", "gen", "torch_rng", "epoch", "history")

TEACHER_DATASETS = ("fashion-mnist", "cifar10")
"""The data sets :func:`train_teacher` trains on."""
# data set -> pixels of padding of the random crop (the usual choice for each)
_CROP_PAD = {"fashion-mnist": 2, "cifar10": 4}
PRECISIONS = ("fp32", "bf16")


def _augment(
    x: torch.Tensor, gen: torch.Generator, pad: int, fill: float | torch.Tensor
) -> torch.Tensor:
    """Random crop with ``pad`` pixels of padding and a random horizontal flip, per sample.

    ``fill``: the padding's value, one for every channel or a ``(C, 1, 1)`` tensor per channel.
    """
    b, _, h, w = x.shape
    if isinstance(fill, torch.Tensor):  # per channel: pad the shifted images with zeros
        padded = F.pad(x - fill, (pad, pad, pad, pad)) + fill
    else:
        padded = F.pad(x, (pad, pad, pad, pad), value=fill)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).tolist()
    flips = (torch.rand(b, generator=gen) < 0.5).tolist()
    out = []
    for i in range(b):
        dy, dx = offsets[i]
        crop = padded[i, :, dy : dy + h, dx : dx + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def train_teacher(
    arch: str = "resnet20",
    *,
    dataset: str = "fashion-mnist",
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    out: str | Path = "teacher",
    command: str = "",
    log: bool = True,
    resume: bool = True,
    data_root: str | Path | None = None,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict[str, Any]:
    """Train a CIFAR-style ResNet teacher on Fashion-MNIST or CIFAR-10 from a seed; resumable
    per epoch.

    SGD with Nesterov momentum 0.9, a cosine learning-rate schedule over all steps, random crop
    (2-pixel padding for Fashion-MNIST, 4 for CIFAR-10, filled with black) and horizontal flip.
    Writes ``OUT.pt`` (the state dict) and ``OUT.json`` (metadata, including the final-epoch
    test accuracy and the wall time); ``OUT.ckpt`` holds per-epoch progress and is removed when
    training ends.

    Args:
        arch: ``"resnet20"`` or ``"resnet8"``.
        dataset: ``"fashion-mnist"`` (1x28x28) or ``"cifar10"`` (3x32x32; torchvision's files
            or the images as files, see :func:`risloss.data.load_dataset`).
        epochs: passes over the training split.
        batch_size: images per step.
        lr: initial learning rate.
        weight_decay: SGD weight decay.
        seed: seed of the initial weights, the batch order and the augmentation.
        out: output path without suffix.
        command: the command line, recorded in the metadata.
        log: print one line per epoch.
        resume: continue from ``OUT.ckpt`` when it exists (``False``: start over; the old
            checkpoint is replaced when the first epoch ends).
        data_root: the data set's folder (``None``: :func:`risloss.data.load_dataset`'s
            default, such as the ``RISLOSS_CIFAR10`` environment variable).
        precision: ``"fp32"``, or ``"bf16"``: the training passes run under bfloat16 autocast
            (about twice as fast on a CPU with AVX-512 BF16; the weights stay float32 and the
            test accuracy is measured in float32).
        device: ``"cpu"`` or ``"cuda"`` (the images stay in host memory; each batch moves).
            The weights written are on the CPU either way.

    Returns:
        The metadata dictionary written to ``OUT.json``.

    Raises:
        ValueError: an unknown ``arch``, ``dataset`` or ``precision``, or
            ``epochs``/``batch_size`` below 1.
        CheckpointMismatchError: ``OUT.ckpt`` was written with other settings (resume only).
        FileContentError: ``OUT.ckpt`` is unreadable or does not fit ``arch`` (resume only).

    Example:
        >>> from risloss.models._teacher import train_teacher
        >>> meta = train_teacher("resnet8", epochs=1, out="runs/teacher8")  # doctest: +SKIP
    """
    check(one_of(tuple(ARCHITECTURES)), "arch", arch)
    check(one_of(TEACHER_DATASETS), "dataset", dataset)
    check(int_in(1), "epochs", epochs)
    check(int_in(1), "batch_size", batch_size)
    check(one_of(PRECISIONS), "precision", precision)
    check(one_of(("cpu", "cuda")), "device", device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    out = Path(out)
    train = load_dataset(dataset, "train", root=data_root)
    test = load_dataset(dataset, "test", root=data_root)
    assert isinstance(train, TensorImageDataset) and isinstance(test, TensorImageDataset)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    model, opt, sched = _model_and_schedule(
        arch, tuple(train.images.shape[1:]), lr, weight_decay, seed, epochs * steps_per_epoch
    )
    model.to(device)  # the optimizer holds the same parameters, moved in place
    gen = torch.Generator().manual_seed(seed)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    ckpt = out.with_suffix(".ckpt")
    settings = {"arch": arch, "dataset": dataset, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "weight_decay": weight_decay, "seed": seed}  # fmt: skip
    if precision != "fp32":  # recorded only where it differs, so older checkpoints still fit
        settings["precision"] = precision
    if resume and ckpt.exists():
        start_epoch, history = _resume(ckpt, settings, model, opt, sched, gen)
        if log:
            print(f"resuming {arch} from epoch {start_epoch}", flush=True)
    t0 = time.time()
    spent = sum(h.get("seconds", 0.0) for h in history)
    for epoch in range(start_epoch, epochs):
        t_epoch = time.time()
        train_loss = _epoch(
            model, opt, sched, train, gen, batch_size, steps_per_epoch,
            report=_reporter(f"epoch {epoch + 1}/{epochs}", t0) if log else None,
            pad=_CROP_PAD[dataset], bf16=precision == "bf16",
        )  # fmt: skip
        acc = evaluate(model, test, device=device)
        entry = {"epoch": epoch + 1, "train_loss": train_loss, "test_top1": acc}
        if dataset != "fashion-mnist":  # the shipped Fashion-MNIST records stay as they were
            entry["seconds"] = round(time.time() - t_epoch, 1)
            spent += entry["seconds"]
        history.append(entry)
        if log:
            print(f"epoch {epoch + 1}/{epochs} loss {train_loss:.4f} test top-1 {acc:.2f}% "
                  f"({time.time() - t0:.0f}s)", flush=True)  # fmt: skip
        atomic_save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
             "history": history, "settings": settings},
            ckpt,
        )  # fmt: skip
    model.eval()
    final = evaluate(model, test, device=device)
    atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, out.with_suffix(".pt"))
    meta = {
        "name": out.name,
        **_record(settings, final, history, train),
        "training_command": command,
        "torch_version": torch.__version__,
        "platform": platform.machine(),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    ckpt.unlink(missing_ok=True)
    if dataset != "fashion-mnist":
        meta["train_seconds"] = round(spent, 1)
        meta["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        meta["test_images"] = len(test)
        meta["train_images"] = len(train)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    if log:
        print(f"final test top-1 {final:.2f}%; wrote {out.with_suffix('.pt')}", flush=True)
    return meta


def _model_and_schedule(
    arch: str,
    shape: tuple[int, ...],
    lr: float,
    weight_decay: float,
    seed: int,
    total: int,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The model for ``(C, H, W)`` images (initialized from ``seed``), its SGD optimizer and the
    cosine schedule over ``total`` steps."""
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch](num_classes=10, in_channels=shape[0], image_size=shape[-1])
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    )
    return model, opt, sched


def _resume(
    ckpt: Path,
    settings: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    gen: torch.Generator,
) -> tuple[int, list[dict[str, Any]]]:
    """Restore a run of the same ``settings`` from ``ckpt``: the epoch it stopped at and its
    history (the model, optimizer, schedule and random states are set in place)."""
    state = load_checkpoint(ckpt, expected="a train-teacher checkpoint", keys=_CKPT_KEYS)
    saved = state.get("settings", {"arch": settings["arch"]})  # older checkpoints: the weights tell
    differ = sorted(k for k in saved if saved[k] != settings.get(k))
    if differ:
        raise CheckpointMismatchError(ckpt, differ)
    weights = state["model"]
    problem = (
        state_dict_mismatch(model, weights)
        if isinstance(weights, dict)
        else "its 'model' entry is not a state dict"
    )
    if problem is not None:
        raise FileContentError(f"{ckpt} does not fit a {settings['arch']}: {problem}")
    model.load_state_dict(weights)
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"], state["history"]


def _epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    train: TensorImageDataset,
    gen: torch.Generator,
    batch_size: int,
    steps: int,
    report: Callable[[int, int, float], None] | None = None,
    pad: int = 2,
    bf16: bool = False,
) -> float:
    """One pass over ``train`` in an order drawn from ``gen``, each batch augmented (random
    crop of ``pad``-pixel padding filled with black, flip); the mean loss of its steps.
    ``report(step, steps, mean loss so far)`` is called after each quarter of the pass but
    the last (a line before the epoch ends: a first epoch takes minutes on a CPU)."""
    marks = {steps * q // 4 for q in (1, 2, 3)} - {0, steps}
    fill: float | torch.Tensor
    if len(train.mean) == 1:
        fill = (0.0 - train.mean[0]) / train.std[0]
    else:
        fill = (-torch.tensor(train.mean) / torch.tensor(train.std)).view(-1, 1, 1)
    model.train()
    perm = torch.randperm(len(train), generator=gen)
    running = 0.0
    device = next(model.parameters()).device
    for step in range(steps):
        idx = perm[step * batch_size : (step + 1) * batch_size]
        x = _augment(train.images[idx], gen, pad, fill)
        x, y = x.to(device), train.labels[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if report is not None and step + 1 in marks:
            report(step + 1, steps, running / (step + 1))
    return running / steps


def _reporter(label: str, t0: float) -> Callable[[int, int, float], None]:
    """Prints ``epoch 1/4: 118/469 steps (25%), loss 0.6532 (31s)``."""

    def report(step: int, steps: int, loss: float) -> None:
        print(
            f"{label}: {step}/{steps} steps ({100 * step // steps}%), loss {loss:.4f} "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )

    return report


def _record(
    settings: dict[str, Any],
    final: float,
    history: list[dict[str, Any]],
    train: TensorImageDataset,
) -> dict[str, Any]:
    """What ``OUT.json`` records of the teacher and of how it was trained."""
    keys = ("epochs", "batch_size", "lr", "weight_decay", "seed", "precision")
    return {
        "arch": settings["arch"],
        "dataset": settings["dataset"],
        "num_classes": 10,
        "input_shape": list(train.images.shape[1:]),
        "preprocessing": {
            "scale": "pixels / 255",
            "mean": [round(v, 4) for v in train.mean],
            "std": [round(v, 4) for v in train.std],
        },
        "test_top1": round(final, 2),
        **{k: settings[k] for k in keys if k in settings},
        "history": history,
    }
