"""A synthetic calibration set: the trainers' generator, trained with no student, and its images.

:func:`synthesize` runs the generator half of the training loop of :func:`~risloss.training.train`
(the same :class:`~risloss.training._sources.GeneratorSource`, checkpoints, resuming and
Ctrl-C handling), then draws a set of images from the trained generator and writes it in the
forms other toolchains read: an ImageFolder of PNG files and a tensor file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import attrs
import torch
from torch import nn

from risloss._checkpoint import atomic_save
from risloss._validators import check, int_in
from risloss.data import _channel_stats
from risloss.distributed import DistributedContext, rank_seed
from risloss.objective import SynthesisObjective
from risloss.training._config import TrainConfig
from risloss.training._models import model_normalization
from risloss.training._plots import save_loss_plot
from risloss.training._progress import Progress
from risloss.training._sources import GeneratorSource
from risloss.training._trainer import (
    CHECKPOINT,
    TrainingInterrupted,
    _generator_source,
    _interruptible,
    _load_resume_state,
    _teacher_and_test,
    input_range_hint,
    synthesis_summary,
)

__all__ = ["SYNTHESIS_METHODS", "SynthesisMethod", "synthesize"]

SynthesisMethod = Literal["ris", "gdfq"]
"""The image sources that train a generator: the RIS objective and GDFQ's."""
SYNTHESIS_METHODS: tuple[str, ...] = get_args(SynthesisMethod)
"""The ``method`` values :func:`synthesize` accepts: ``("ris", "gdfq")``."""
IMAGE_FOLDER = "synthetic"
"""The ImageFolder :func:`synthesize` writes under its output folder: ``CLASS/INDEX.png``."""
TENSOR_FILE = "synthetic.pt"
"""The tensor file :func:`synthesize` writes: ``images``, ``labels``, ``teacher_logits``."""
_GENERATION_SEED = 2_000_003
"""Offset of the seed of the final draw from the run's seed (a stream of its own)."""
_SHOWN = ("g_loss", "g_agree")


def synthesize(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    num_images: int,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train a generator on the teacher and write ``num_images`` synthetic images.

    The generator trains exactly as in :func:`~risloss.training.train` with the same
    ``config`` (its objective ``config.ris`` with ``method="ris"``, GDFQ's with ``"gdfq"``),
    for ``config.iters`` iterations of one generator step on a batch of ``config.batch_size``,
    with no student: the student's fields of ``config`` (``task``, ``warmup``, bit widths,
    learning rate and losses, ``eval_*``) are not used (``TrainConfig`` still checks them:
    ``warmup <= iters``). The data (``config.data``, ``image_size``, ``normalize``) only tells
    the image shape the model takes: one of its images is read, to check the model against it
    (:func:`risloss.data.check_compatible`); none is used for training.

    Then ``num_images`` images are drawn, seeded by ``config.seed``, with labels balanced over
    the classes and shuffled, in batches of ``config.batch_size`` with the generator's
    BatchNorm layers in train mode (normalized by each batch's statistics, exactly as the
    objective saw them during training; the generator's running averages are not used) and
    without gradients. The teacher labels each in eval mode. Outputs in ``out_dir``:

    - ``synthetic/CLASS/INDEX.png``: an ImageFolder, one sub-folder per class the teacher
      predicts (``CLASS`` is the class index, zero-padded; a class the teacher never predicts
      has no folder, so an ImageFolder loader then numbers the classes differently: read the
      class from the folder name). ``INDEX`` is the image's row in ``synthetic.pt``. The
      pixels are the images mapped back through the model's normalization: ``normalize``
      when it is ``(mean, std)``; for ``"default"`` a shipped teacher's recorded
      normalization, else the named data set's (ImageNet's for ``imagefolder:``); none with
      ``normalize=None`` (the model takes ``[0, 1]`` images). Values are clipped to
      ``[0, 1]``. For a data set from code with ``"default"`` the normalization is unknown
      and each image is min-max scaled to ``[0, 1]`` on its own (``metrics.json`` says which
      mapping was used).
    - ``synthetic.pt``: ``{"images": (N, C, H, W) float32`` in the model's (normalized) input
      space, ``"labels": (N,) int64`` requested classes, ``"teacher_logits": (N, K)}``; it
      loads with ``torch.load(path, weights_only=True)``.
    - ``metrics.json``: the configuration; ``synthesis``, the training's figures averaged
      over its last 10 iterations (``g_agree``, share of a batch the teacher classifies as
      requested; ``g_ce``; ``g_bns``, the BatchNorm-statistics loss; ``g_sim``, within-class
      feature similarity, lower is more diverse; and the RIS terms);
      ``images``, the same figures of the written images (``agreement`` over all of them,
      ``ce``, ``bns``, ``similarity`` as means over their batches) and ``predicted``, the
      count per predicted class; ``pixels``, the mapping to pixel space; ``history``.
    - ``generator.pt`` (the trained generator's state dict, before the draw),
      ``losses.png`` and ``checkpoint.pt``.

    Every file is written atomically, ``metrics.json`` last.

    Args:
        config: the run; ``method`` must be ``"ris"`` or ``"gdfq"``.
        out_dir: output folder (created).
        num_images: how many images to write, ``>= 1``.
        resume: continue from ``out_dir/checkpoint.pt``; the configuration must match
            (``num_images`` may differ). On the CPU a resumed run writes bitwise the same
            files as an uninterrupted one.
        progress: show a progress line (default: only on a terminal).
        log: where one-line messages go (``None``: silent).

    Returns:
        The dictionary written to ``metrics.json``.

    Raises:
        ValueError: before any output is written: another ``method``, a ``num_images`` below
            1, a model and data that do not fit (see :func:`risloss.data.check_compatible`),
            images that are not square with a side divisible by 4 (the generator's shapes),
            images with other than 1 or 3 channels (PNG files hold grayscale or RGB), a run
            launched by ``torchrun`` (synthesis runs in one process), ``out_dir`` an existing
            file; a checkpoint that does not match ``config``, or ``resume`` without one.
        TrainingInterrupted: on SIGINT/SIGTERM, after saving a checkpoint.
        risloss.data.DataFileError: the evaluation data cannot be read.

    Example:
        >>> from risloss.training import TrainConfig, synthesize
        >>> config = TrainConfig(model="resnet8_fashion_mnist", iters=100, batch_size=32)
        >>> metrics = synthesize(config, "runs/synthesize", num_images=256)  # doctest: +SKIP
        >>> import torch
        >>> data = torch.load(  # doctest: +SKIP
        ...     "runs/synthesize/synthetic.pt", weights_only=True
        ... )
        >>> data["images"].shape, data["labels"].shape  # doctest: +SKIP
        (torch.Size([256, 1, 28, 28]), torch.Size([256]))
        >>> synthesize(TrainConfig(method="noise"), "runs/s", num_images=8)
        Traceback (most recent call last):
        ...
        ValueError: method must be one of ('ris', 'gdfq') for synthesis, got 'noise'
    """
    if config.method not in SYNTHESIS_METHODS:
        raise ValueError(
            f"method must be one of {SYNTHESIS_METHODS} for synthesis, got {config.method!r}"
        )
    check(int_in(1), "num_images", num_images)
    if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:
        raise ValueError("synthesize runs in one process; launch it without torchrun")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} is a file, not a folder")
    say = log or (lambda _msg: None)
    ctx = DistributedContext(device=torch.device(config.device))
    state = _load_resume_state(out / CHECKPOINT, config, ctx) if resume else None
    run = _SynthesisRun.setup(config, out / CHECKPOINT, ctx)
    hint = input_range_hint(run.source, config)
    if hint:
        say(hint)
    if state is not None:
        run.restore(state)
        say(f"resumed from {run.ckpt_path} at iteration {run.start}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run.train(progress)
    train_seconds = time.monotonic() - t0
    images, labels = run.draw(num_images)
    figures = run.measure(images, labels)
    metrics: dict[str, Any] = {
        "config": config.to_dict(),
        "num_images": num_images,
        "num_classes": run.num_classes,
        "image_shape": list(run.shape),
        "synthesis": synthesis_summary(run.history),
        "images": {k: v for k, v in figures.items() if k != "logits"},
        "pixels": run.pixels.describe(),
        "generation": {
            "seed": config.seed + _GENERATION_SEED,
            "batch_size": config.batch_size,
            "batchnorm": "batch statistics (generator in train mode)",
        },
        "files": {"images": IMAGE_FOLDER, "tensors": TENSOR_FILE, "generator": "generator.pt"},
        "train_seconds": train_seconds,
        "history": run.history,
        "torch_version": torch.__version__,
    }
    atomic_save(
        {"images": images, "labels": labels, "teacher_logits": figures["logits"]},
        out / TENSOR_FILE,
    )
    predicted = figures["logits"].argmax(1)
    _write_image_folder(run.pixels.apply(images), predicted, run.num_classes, out / IMAGE_FOLDER)
    atomic_save(run.source.generator.state_dict(), out / "generator.pt")
    save_loss_plot(run.history, out / "losses.png")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, out / "metrics.json")
    return metrics


@attrs.frozen
class _PixelMapping:
    """How images in the model's input space become pixels in ``[0, 1]``."""

    kind: Literal["normalize", "clip", "min-max"]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def of(cls, config: TrainConfig, meta: dict[str, Any], channels: int) -> _PixelMapping:
        norm = model_normalization(config.data, config.normalize, meta)
        if norm == "unknown":  # a data set from code, as its factory returns it
            return cls("min-max")
        if norm is None:
            return cls("clip")
        mean, std = _channel_stats(norm[0], norm[1], channels, "normalize")
        return cls("normalize", mean, std)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` model inputs -> ``(N, C, H, W)`` uint8 pixels."""
        x = images.float()
        if self.kind == "normalize":
            x = x * torch.tensor(self.std).view(1, -1, 1, 1) + torch.tensor(self.mean).view(
                1, -1, 1, 1
            )
        elif self.kind == "min-max":
            flat = x.flatten(1)
            lo = flat.min(1).values.view(-1, 1, 1, 1)
            hi = flat.max(1).values.view(-1, 1, 1, 1)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
        return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)

    def describe(self) -> dict[str, Any]:
        if self.kind == "normalize":
            return {"mapping": "x * std + mean", "mean": list(self.mean), "std": list(self.std)}
        if self.kind == "clip":
            return {"mapping": "none (the model takes [0, 1] images)"}
        return {"mapping": "min-max per image (the model's normalization is unknown)"}


@attrs.define(eq=False)
class _SynthesisRun:
    """What a synthesis run holds: the teacher, the generator source and the random state."""

    config: TrainConfig
    ckpt_path: Path
    teacher: nn.Module
    shape: tuple[int, int, int]
    num_classes: int
    pixels: _PixelMapping
    source: GeneratorSource
    data_rng: torch.Generator
    perturbation_rng: torch.Generator
    history: list[dict[str, float]] = attrs.field(factory=list)
    start: int = 0

    @classmethod
    def setup(cls, config: TrainConfig, ckpt_path: Path, ctx: DistributedContext) -> _SynthesisRun:
        """Load and check the teacher and data, build the generator (no output written)."""
        teacher, meta, _, shape, num_classes = _teacher_and_test(config, ctx.device)
        if shape[0] not in (1, 3):
            raise ValueError(
                f"the model takes {shape[0]}-channel images; synthesize writes PNG files, "
                "which hold 1 (grayscale) or 3 (RGB) channels"
            )
        pixels = _PixelMapping.of(config, meta, shape[0])
        torch.manual_seed(config.seed)  # the generator's initial weights, as in train()
        data_rng = torch.Generator().manual_seed(rank_seed(config.seed, 0))
        perturbation_rng = torch.Generator().manual_seed(rank_seed(config.seed + 1_000_003, 0))
        source = _generator_source(
            config,
            teacher,
            num_classes=num_classes,
            shape=shape,
            data_rng=data_rng,
            perturbation_rng=perturbation_rng,
            ctx=ctx,
            meta=meta,
        )
        return cls(
            config=config,
            ckpt_path=ckpt_path,
            teacher=teacher,
            shape=shape,
            num_classes=num_classes,
            pixels=pixels,
            source=source,
            data_rng=data_rng,
            perturbation_rng=perturbation_rng,
        )

    def save(self, iteration: int) -> None:
        """Write the checkpoint atomically."""
        atomic_save(
            {
                "config": self.config.to_dict(),
                "iteration": iteration,
                "source": self.source.state_dict(),
                "data_rng": self.data_rng.get_state(),
                "perturbation_rng": self.perturbation_rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": self.history,
            },
            self.ckpt_path,
        )

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        if "student" in state:
            raise ValueError(
                f"resume: {self.ckpt_path} was written by a compression run, not by synthesize"
            )
        self.source.load_state_dict(state["source"])
        self.data_rng.set_state(state["data_rng"])
        self.perturbation_rng.set_state(state["perturbation_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        self.start = int(state["iteration"])

    def train(self, progress: bool | None) -> None:
        """The generator's iterations, checkpointed; Ctrl-C saves and raises."""
        config = self.config
        bar = Progress(
            config.iters, start=self.start, desc=f"synthesize/{config.method}", enabled=progress
        )
        with _interruptible() as interrupted:
            for it in range(self.start, config.iters):
                record = dict(self.source.next_batch().parts)
                record["iter"] = it + 1
                self.history.append(record)
                done = it + 1
                bar.update(done, {k: v for k, v in record.items() if k in _SHOWN})
                if done % config.checkpoint_every == 0 or done == config.iters:
                    self.save(done)
                if interrupted() and done < config.iters:
                    self.save(done)
                    bar.close()
                    raise TrainingInterrupted(self.ckpt_path, done)
        bar.close()

    @torch.no_grad()
    def draw(self, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_images`` images (model input space, on the CPU) and their requested labels.

        Labels are balanced over the classes and shuffled; the last batch is filled up to
        ``batch_size`` (extra images are dropped) so every batch has the training's size.
        """
        config, c = self.config, self.num_classes
        rng = torch.Generator().manual_seed(config.seed + _GENERATION_SEED)
        labels = (torch.arange(num_images) % c)[torch.randperm(num_images, generator=rng)]
        batch = config.batch_size
        total = math.ceil(num_images / batch) * batch
        fill = torch.randint(0, c, (total - num_images,), generator=rng)
        all_labels = torch.cat([labels, fill])
        generator = copy.deepcopy(self.source.generator).train()  # leaves the trained one as is
        z = torch.randn((total, generator.latent_dim), generator=rng)
        device = self.source.device
        images = [
            generator(zb.to(device), yb.to(device)).float().cpu()
            for zb, yb in zip(z.split(batch), all_labels.split(batch), strict=True)
        ]
        return torch.cat(images)[:num_images].contiguous(), labels

    @torch.no_grad()
    def measure(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """The teacher's logits of the images and the synthesis figures, batch by batch.

        The objective's CE + BNS part (:meth:`RISConfig.baseline`), with the same figures as
        the training's ``g_`` entries: one teacher pass (eval mode) per batch.
        """
        objective = SynthesisObjective.from_config(self.teacher, self.config.ris.baseline())
        device = self.source.device
        logits: list[torch.Tensor] = []
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        batch = self.config.batch_size
        for xb, yb in zip(images.split(batch), labels.split(batch), strict=True):
            parts = objective(xb.to(device), yb.to(device))
            logits.append(parts.logits.float().cpu())
            for name, value in parts.scalars("").items():
                if name in ("ce", "bns", "sim"):
                    sums[name] = sums.get(name, 0.0) + value * len(xb)
                    counts[name] = counts.get(name, 0) + len(xb)
        all_logits = torch.cat(logits)
        predicted = all_logits.argmax(1)
        figures: dict[str, Any] = {
            "agreement": float((predicted == labels).float().mean()),
            **{("similarity" if k == "sim" else k): sums[k] / counts[k] for k in sums},
            "predicted": {str(k): int((predicted == k).sum()) for k in range(self.num_classes)},
            "logits": all_logits,
        }
        return figures


def _write_image_folder(
    pixels: torch.Tensor, classes: torch.Tensor, num_classes: int, folder: Path
) -> None:
    """PNG files ``folder/CLASS/INDEX.png``, written to a temporary folder and moved in place."""
    from PIL import Image

    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    class_width = len(str(num_classes - 1))
    index_width = max(5, len(str(len(pixels) - 1)))
    arrays = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    for i, (array, label) in enumerate(zip(arrays, classes.tolist(), strict=True)):
        sub = tmp / f"{label:0{class_width}d}"
        sub.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        image.save(sub / f"{i:0{index_width}d}.png")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
