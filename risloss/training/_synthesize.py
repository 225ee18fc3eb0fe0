"""A synthetic calibration set: the trainers' generator, trained with no student, and its images.

:class:`SynthesisJob` runs the generator half of :class:`~risloss.training.TrainJob` on the
shared run loop (the same image source, checkpoints, resuming and Ctrl-C handling), then draws
a set of images from the trained generator and writes it in the forms other toolchains read:
an ImageFolder of PNG files and a tensor file. :func:`synthesize` runs it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset

from risloss._checkpoint import atomic_save
from risloss._util import machine_info
from risloss._validators import check, int_in
from risloss.data import InputSpec
from risloss.distributed import DistributedContext
from risloss.objective import SynthesisObjective
from risloss.training._config import TrainConfig
from risloss.training._inputs import Inputs, check_data_argument, generator_source
from risloss.training._run import Run, run_loop, synthesis_summary
from risloss.training._sources import GeneratorSource
from risloss.training._trainer import check_fit

__all__ = ["SYNTHESIS_METHODS", "SynthesisJob", "SynthesisMethod", "synthesize"]

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


class SynthesisJob:
    """A generator trained on the teacher with no student, then ``num_images`` images drawn
    from it (a :class:`~risloss.training.Job` that :func:`synthesize` runs).

    The generator trains exactly as in :class:`~risloss.training.TrainJob` with the same
    ``config`` (its objective ``config.ris`` with ``method="ris"``, GDFQ's with ``"gdfq"``),
    for ``config.iters`` iterations of one generator step on a batch of ``config.batch_size``,
    with no student: the student's fields of ``config`` (``task``, ``warmup``, bit widths,
    learning rate and losses, ``eval_*``) are not used (``TrainConfig`` still checks them:
    ``warmup <= iters``). The test data (``config.data`` with ``image_size`` and
    ``normalize``, or ``test_data``) only tells the image shape the model takes: one of its
    images is read, to check the model against it (:func:`risloss.data.check_compatible`);
    none is used for training.

    Then ``num_images`` images are drawn, seeded by ``config.seed``, with labels balanced over
    the classes and shuffled, in batches of ``config.batch_size`` with the generator's
    BatchNorm layers in train mode (normalized by each batch's statistics, exactly as the
    objective saw them during training; the generator's running averages are not used) and
    without gradients. The teacher labels each in eval mode. Outputs in the run's folder:

    - ``synthetic/CLASS/INDEX.png``: an ImageFolder, one sub-folder per class the teacher
      predicts (``CLASS`` is the class index, zero-padded; a class the teacher never predicts
      has no folder, so an ImageFolder loader then numbers the classes differently: read the
      class from the folder name). ``INDEX`` is the image's row in ``synthetic.pt``. The
      pixels are the images mapped back through the model's normalization, as the run's
      :class:`~risloss.data.InputSpec` resolves it (``normalize`` when it is ``(mean, std)``;
      for ``"default"`` a shipped teacher's recorded normalization, else the named data
      set's, ImageNet's for ``imagefolder:``; none with ``normalize=None``, the model takes
      ``[0, 1]`` images). Values are clipped to ``[0, 1]``. Where the normalization is
      unknown (data from code or a data set object with ``"default"``) each image is min-max
      scaled to ``[0, 1]`` on its own (``metrics.json`` says which mapping was used).
    - ``synthetic.pt``: ``{"images": (N, C, H, W) float32`` in the model's (normalized) input
      space, ``"labels": (N,) int64`` requested classes, ``"teacher_logits": (N, K)}``; it
      loads with ``torch.load(path, weights_only=True)``.
    - ``metrics.json``: the configuration; ``synthesis``, the training's figures averaged
      over its last 10 iterations (``g_agree``, share of a batch the teacher classifies as
      requested; ``g_ce``; ``g_bns``, the BatchNorm-statistics loss; ``g_sim``, within-class
      feature similarity, lower is more diverse; and the RIS terms);
      ``images``, the same figures of the written images (``agreement`` over all of them,
      ``ce``, ``bns``, ``similarity`` as means over their batches) and ``predicted``, the
      count per predicted class; ``pixels``, the mapping to pixel space; ``input_spec``;
      ``objects``; ``history``.
    - ``generator.pt`` (the trained generator's state dict, before the draw),
      ``losses.png`` and ``checkpoint.pt``.

    Every file is written atomically, ``metrics.json`` last.

    Args:
        config: the run; ``method`` must be ``"ris"`` or ``"gdfq"``.
        num_images: how many images to write, ``>= 1``.
        model: the teacher as an object (a copy is used; ``config.model`` is then not read).
        test_data: a ``Dataset`` whose images show the shape the model takes (in place of
            ``config.data``).

    Raises:
        ValueError: another ``method``, a ``num_images`` below 1.
        TypeError: ``model`` or ``test_data`` of the wrong type.

    Example:
        >>> from risloss.training import SynthesisJob, TrainConfig
        >>> job = SynthesisJob(TrainConfig(iters=10, warmup=0), num_images=64)
        >>> job.label
        'synthesize/ris'
    """

    kind = "synthesize"

    def __init__(
        self,
        config: TrainConfig,
        *,
        num_images: int,
        model: nn.Module | None = None,
        test_data: Dataset | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if config.method not in SYNTHESIS_METHODS:
            raise ValueError(
                f"method must be one of {SYNTHESIS_METHODS} for synthesis, got {config.method!r}"
            )
        check(int_in(1), "num_images", num_images)
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(
                "model must be a torch.nn.Module (a model given by name goes in "
                f"TrainConfig.model), got {type(model).__name__}"
            )
        check_data_argument(test_data, "test_data")
        self.config = config
        self.num_images = num_images
        self.label = f"synthesize/{config.method}"
        self._model, self._test_data = model, test_data
        self.source: GeneratorSource

    def prepare(self, run: Run) -> None:
        """Load and check the teacher and the data (nothing is written).

        Raises:
            ValueError: a distributed run, a model and data that do not fit, images with
                other than 1 or 3 channels (PNG files hold grayscale or RGB).
        """
        if run.context.distributed:
            raise ValueError("synthesize runs in one process; launch it without torchrun")
        self.inputs = Inputs.resolve(
            self.config,
            run.context.device,
            model=self._model,
            test_data=self._test_data,
        )
        self.teacher, self.spec = self.inputs.teacher, self.inputs.spec
        self.num_classes = self.inputs.num_classes
        if self.spec.channels not in (1, 3):
            raise ValueError(
                f"the model takes {self.spec.channels}-channel images; synthesize writes PNG "
                "files, which hold 1 (grayscale) or 3 (RGB) channels"
            )
        self.pixels = _PixelMapping.of(self.spec)
        check_fit(self.config, self.spec.shape, self.num_classes, run.out,
                  num_images=self.num_images)  # fmt: skip

    def build(self, run: Run) -> None:
        """The generator, its optimizer and objective."""
        self.source = generator_source(self.config, self.inputs, run)

    def step(self, it: int) -> dict[str, float]:
        """One generator step; its figures."""
        return dict(self.source.next_batch().parts)

    def state_dict(self) -> dict[str, Any]:
        """The generator and its optimizer."""
        return {"source": self.source.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint holding what :meth:`state_dict` wrote."""
        self.source.load_state_dict(state["source"])

    def outputs(self, run: Run) -> dict[str, Any]:
        """Draw and measure the images, write ``synthetic.pt``, ``synthetic/`` and
        ``generator.pt``; the metrics."""
        config, out = self.config, run.out
        images, labels = self.draw(self.num_images)
        figures = self.measure(images, labels)
        metrics: dict[str, Any] = {
            "config": config.to_dict(),
            "num_images": self.num_images,
            "num_classes": self.num_classes,
            "image_shape": list(self.spec.shape),
            "synthesis": synthesis_summary(run.history),
            "images": {k: v for k, v in figures.items() if k != "logits"},
            "pixels": self.pixels.describe(),
            "generation": {
                "seed": config.seed + _GENERATION_SEED,
                "batch_size": config.batch_size,
                "batchnorm": "batch statistics (generator in train mode)",
            },
            "files": {"images": IMAGE_FOLDER, "tensors": TENSOR_FILE, "generator": "generator.pt"},
            "train_seconds": run.train_seconds,
            "history": run.history,
            "torch_version": torch.__version__,
            "machine": machine_info(),
            "input_spec": self.spec.to_dict(),
            "objects": dict(self.inputs.objects),
        }
        atomic_save(
            {"images": images, "labels": labels, "teacher_logits": figures["logits"]},
            out / TENSOR_FILE,
        )
        predicted = figures["logits"].argmax(1)
        folder = out / IMAGE_FOLDER
        _write_image_folder(self.pixels.apply(images), predicted, self.num_classes, folder)
        atomic_save(self.source.generator.state_dict(), out / "generator.pt")
        return metrics

    @torch.no_grad()
    def draw(self, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_images`` images (model input space, on the CPU) and their requested labels.

        Labels are balanced over the classes and shuffled; the last batch is filled up to
        ``batch_size`` (extra images are dropped) so every batch has the training's size. The
        trained generator is left as it is.
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


def synthesize(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    num_images: int,
    model: nn.Module | None = None,
    test_data: Dataset | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train a generator on the teacher and write ``num_images`` synthetic images.

    The job is a :class:`SynthesisJob` (its documentation says how the generator trains, how
    the images are drawn and what each file holds) run by
    :func:`~risloss.training.run_loop` in one process: ``synthetic/CLASS/INDEX.png`` (an
    ImageFolder), ``synthetic.pt`` (images, labels, teacher logits), ``generator.pt``,
    ``losses.png``, ``checkpoint.pt`` and ``metrics.json`` (last).

    Args:
        config: the run; ``method`` must be ``"ris"`` or ``"gdfq"``.
        out_dir: output folder (created).
        num_images: how many images to write, ``>= 1``.
        model: the teacher as an object (an ``nn.Module`` holding its weights; a copy is
            used) in place of ``config.model``.
        test_data: a ``Dataset`` of ``(image, label)`` pairs in place of ``config.data``.
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
    job = SynthesisJob(config, num_images=num_images, model=model, test_data=test_data)
    if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:
        raise ValueError("synthesize runs in one process; launch it without torchrun")
    context = DistributedContext(device=torch.device(config.device))
    return run_loop(job, out_dir, resume=resume, progress=progress, log=log, context=context)


@attrs.frozen
class _PixelMapping:
    """How images in the model's input space become pixels in ``[0, 1]``."""

    kind: Literal["normalize", "clip", "min-max"]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def of(cls, spec: InputSpec) -> _PixelMapping:
        norm = spec.normalization
        if norm == "unknown":  # a data set from code, as its factory returns it
            return cls("min-max")
        if norm is None:
            return cls("clip")
        return cls("normalize", norm[0], norm[1])

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


def _write_image_folder(
    pixels: torch.Tensor, classes: torch.Tensor, num_classes: int, folder: Path
) -> None:
    """PNG files ``folder/CLASS/INDEX.png``, written to a temporary folder and moved in place.

    Only files of that form (digits, then digits and ``.png``) of an earlier draw are
    replaced or removed: anything else a user keeps in ``folder`` stays.
    """
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
    if not folder.exists():
        os.replace(tmp, folder)
        return
    earlier = [p for p in _drawn_images(folder)]
    for path in earlier:  # set aside, then the new ones in, then the old ones go
        (old / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.replace(path, old / path.parent.name / path.name)
    for sub in sorted(tmp.iterdir()):
        (folder / sub.name).mkdir(exist_ok=True)
        for path in sorted(sub.iterdir()):
            os.replace(path, folder / sub.name / path.name)
    for sub in {p.parent for p in earlier}:
        with contextlib.suppress(OSError):
            sub.rmdir()  # a class folder the new draw does not use, now empty
    shutil.rmtree(tmp)
    shutil.rmtree(old, ignore_errors=True)


def _drawn_images(folder: Path) -> list[Path]:
    """The files of ``folder`` that a draw writes: ``DIGITS/DIGITS.png``."""
    return sorted(
        path
        for sub in folder.iterdir()
        if sub.is_dir() and not sub.is_symlink() and sub.name.isdigit()
        for path in sub.iterdir()
        if path.is_file() and path.suffix == ".png" and path.stem.isdigit()
    )
