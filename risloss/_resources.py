"""Memory a run will need, estimated from its settings before any work, and refused early when
it cannot fit.

The big buffers of a run are known from its settings alone: the replay pool (``replay_size``
images of ``C x H x W`` float32 with the teacher's logits and the labels as class weights,
``K`` floats each, kept in memory and written into every checkpoint), the generator's
activations on a batch, the images :func:`~risloss.training.synthesize` draws at the end, and
the evaluation images held as tensors. :func:`estimate_memory` adds them up;
:func:`check_memory` compares the sum with the memory available (:func:`available_memory`)
and refuses, in one line naming the option to change, a setting whose buffers alone cannot
fit. The estimate is a lower bound (the teacher's own activations, the models and the
optimizer come on top): a refused setting cannot run, and one that passes may still need
more.

Example:
    >>> from risloss._resources import check_memory, estimate_memory
    >>> need = estimate_memory(image_shape=(3, 32, 32), num_classes=10, batch_size=256,
    ...                        replay_size=4096)
    >>> round(need.pool / 2**20), round(need.batch / 2**20)  # MiB
    (48, 433)
    >>> try:
    ...     check_memory(image_shape=(3, 32, 32), num_classes=10, batch_size=256,
    ...                  replay_size=10_000_000, available=16 * 2**30)
    ... except ValueError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    --replay-size 10000000: the replay pool needs about 124 GB (10000000 images of 3x32x32 ...
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "pool_image_bytes",
    "GENERATOR_VALUES_PER_PIXEL",
    "OPTION_NAMES",
    "MemoryEstimate",
    "ResourceError",
    "available_disk",
    "available_memory",
    "check_disk",
    "check_memory",
    "estimate_memory",
]

FLOAT_BYTES = 4
GENERATOR_VALUES_PER_PIXEL = 424
"""Float32 values the generator keeps for its backward pass per output pixel of one image,
besides ``3 * C`` for the maps of the image's own channels.

Measured on :class:`~risloss.models.Generator` with GDFQ's widths (``base_channels=128``):
its backward pass keeps 427.5 values per pixel for 1-channel images and 433.5 for 3-channel
ones, at sides 16 to 64 (mostly the ``128 x S^2`` and ``64 x S^2`` maps of the last two
stages); ``424 + 3 * C`` stays below both."""

OPTION_NAMES: Mapping[str, str] = {
    "replay_size": "--replay-size",
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "num_images": "--num-images",
    "eval_limit": "--eval-limit",
}
"""How messages name each setting (the command line's options)."""


class ResourceError(ValueError):
    """A setting whose buffers cannot fit the memory (or disk) available; the message is
    one line naming the option, the bytes needed and those available."""


@attrs.frozen
class MemoryEstimate:
    """The bytes of a run's big buffers (a lower bound of what it needs).

    Attributes:
        pool: the replay pool: images, logits and labels.
        batch: the generator's activations and the images of one batch.
        images: the images (and logits) :func:`~risloss.training.synthesize` draws.
        evaluation: the evaluation images held as tensors.
        total: all of them.
        checkpoint: the part of each checkpoint file they take (the replay pool).
    """

    pool: int
    batch: int
    images: int
    evaluation: int

    @property
    def total(self) -> int:
        return self.pool + self.batch + self.images + self.evaluation

    @property
    def checkpoint(self) -> int:
        return self.pool


def _positive(name: str, value: Any, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be an integer >= {0 if zero else 1}, got {value!r}")
    return value


def _shape(image_shape: Any) -> tuple[int, int, int]:
    if not (isinstance(image_shape, Sequence) and len(image_shape) == 3):
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    c, h, w = (_positive("image_shape entries", v) for v in image_shape)
    return c, h, w


def pool_image_bytes(image_shape: Sequence[int], num_classes: int) -> int:
    """The bytes one image takes in the replay pool: its ``C*H*W`` values, the teacher's
    ``K`` logits and its label row of ``K`` class weights, all float32.

    Example:
        >>> from risloss._resources import pool_image_bytes
        >>> pool_image_bytes((1, 28, 28), 10)
        3216
    """
    return (math.prod(int(v) for v in image_shape) + 2 * int(num_classes)) * FLOAT_BYTES


def estimate_memory(
    *,
    image_shape: Sequence[int],
    num_classes: int,
    batch_size: int,
    replay_size: int = 0,
    num_images: int = 0,
    eval_images: int = 0,
    generator: bool = True,
) -> MemoryEstimate:
    """The bytes of a run's big buffers, from its settings.

    - replay pool: ``replay_size * (C*H*W + 2*K) * 4`` (images, logits, labels as class
      weights, all float32);
    - batch: ``batch_size * H*W * (424 + 3*C) * 4`` with a generator
      (:data:`GENERATOR_VALUES_PER_PIXEL`), else ``batch_size * C*H*W * 4 * 2`` (the images
      and one copy);
    - synthesized images: ``num_images * (C*H*W + K) * 4``;
    - evaluation images: ``eval_images * C*H*W * 4``.

    Python integers do not overflow: an absurd setting gives an absurd number, not an error.

    Args:
        image_shape: ``(C, H, W)`` of the model's images.
        num_classes: ``K``, the model's outputs.
        batch_size: images per step.
        replay_size: images in the replay pool (0: none).
        num_images: images a synthesis run draws at the end (0: none).
        eval_images: evaluation images held as tensors (0: none or not known).
        generator: whether a generator makes the batches (not for ``method="noise"`` or
            ``"real"``).

    Raises:
        ValueError: a negative or non-integer count, an ``image_shape`` that is not three
            positive integers.

    Example:
        >>> from risloss._resources import estimate_memory
        >>> estimate_memory(image_shape=(1, 28, 28), num_classes=10, batch_size=1,
        ...                 replay_size=2)
        MemoryEstimate(pool=6432, batch=1339072, images=0, evaluation=0)
    """
    c, h, w = _shape(image_shape)
    k = _positive("num_classes", num_classes)
    b = _positive("batch_size", batch_size)
    pool = _positive("replay_size", replay_size, zero=True) * pool_image_bytes((c, h, w), k)
    per_pixel = GENERATOR_VALUES_PER_PIXEL + 3 * c if generator else 2 * c
    batch = b * h * w * per_pixel
    images = _positive("num_images", num_images, zero=True) * (c * h * w + k)
    evaluation = _positive("eval_images", eval_images, zero=True) * c * h * w
    return MemoryEstimate(
        pool=pool,
        batch=batch * FLOAT_BYTES,
        images=images * FLOAT_BYTES,
        evaluation=evaluation * FLOAT_BYTES,
    )


def _meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    values = {}
    try:
        with open(path) as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[name] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return values


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, when it has one."""
    try:
        limit = Path(root, "memory.max").read_text().strip()
        used = Path(root, "memory.current").read_text().strip()
    except OSError:
        return None
    if not (limit.isdigit() and used.isdigit()):
        return None  # "max": no limit
    return max(int(limit) - int(used), 0)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes of memory a run on ``device`` can still take; ``None`` when unknown.

    The CPU: ``MemAvailable`` plus ``SwapFree`` of ``/proc/meminfo`` (else free pages from
    ``os.sysconf``), capped by a cgroup's memory limit. A CUDA device: its free memory
    (``torch.cuda.mem_get_info``). Other devices: unknown.

    Example:
        >>> from risloss._resources import available_memory
        >>> free = available_memory()
        >>> free is None or free > 0
        True
    """
    if device.startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
        except (ImportError, RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    if device != "cpu":
        return None
    info = _meminfo()
    room: int | None = info.get("MemAvailable")
    if room is not None:
        room += info.get("SwapFree", 0)
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            room = None
    cap = _cgroup_room()
    if cap is not None:
        room = cap if room is None else min(room, cap)
    return room


def available_disk(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent).

    Example:
        >>> from risloss._resources import available_disk
        >>> available_disk(".") > 0
        True
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _size(n: int) -> str:
    """``123456789 -> '123 MB'`` (powers of 1000, three figures)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 999.5 or unit == "PB":
            return f"{value:.3g} {unit}" if unit != "B" else f"{n} B"
        value /= 1000
    raise AssertionError  # pragma: no cover


def check_memory(
    *,
    image_shape: Sequence[int],
    num_classes: int,
    batch_size: int,
    replay_size: int = 0,
    num_images: int = 0,
    eval_images: int = 0,
    generator: bool = True,
    image_size: int | None = None,
    device: str = "cpu",
    available: int | None = None,
    host_available: int | None = None,
    names: Mapping[str, str] = OPTION_NAMES,
) -> MemoryEstimate:
    """Refuse, before any work, a setting whose buffers cannot fit the memory available.

    The replay pool and the batch live on ``device``; the synthesized and the evaluation
    images in the host's memory. The checks, in order, each naming the option to change: one
    image's share of a batch (``image_size`` when that option set the size, else
    ``batch_size``); the batch (``batch_size``, with the largest that fits beside the replay
    pool); the replay pool
    beside the batch (``replay_size``, with the largest that fits); the synthesized images
    (``num_images``); the evaluation images (``eval_limit``). Memory that is unknown refuses
    nothing.

    Args:
        image_shape, num_classes, batch_size, replay_size, num_images, eval_images,
            generator: as :func:`estimate_memory` takes them.
        image_size: the image-size setting, when the user set one (messages then name it).
        device: where the pool and the batch live (``"cpu"``, ``"cuda:0"``, ...).
        available: the bytes available on ``device`` (default: :func:`available_memory`).
        host_available: the bytes available on the host (default: ``available`` for the
            CPU, else :func:`available_memory` of ``"cpu"``).
        names: how the message names each setting (default: the command line's options).

    Returns:
        The estimate.

    Raises:
        ResourceError: a setting that cannot fit; one line naming the option.
        ValueError: a bad argument (see :func:`estimate_memory`).

    Example:
        >>> from risloss._resources import check_memory
        >>> try:
        ...     check_memory(image_shape=(3, 100_000, 100_000), num_classes=10, batch_size=8,
        ...                  image_size=100_000, available=16 * 2**30)
        ... except ValueError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        --image-size 100000: one 3x100000x100000 image needs about 17.3 TB in a generator ...
    """
    need = estimate_memory(
        image_shape=image_shape,
        num_classes=num_classes,
        batch_size=batch_size,
        replay_size=replay_size,
        num_images=num_images,
        eval_images=eval_images,
        generator=generator,
    )
    on_cpu = device == "cpu"
    room = available_memory(device) if available is None else available
    if host_available is None:
        host_available = room if on_cpu else available_memory("cpu")
    c, h, w = _shape(image_shape)
    shape = f"{c}x{h}x{w}"
    if room is not None:
        have = f"more than the {_size(room)} of {'memory' if on_cpu else device + ' memory'} free"
        one = need.batch // batch_size
        if one > room:
            if image_size is not None:
                raise ResourceError(
                    f"{names['image_size']} {image_size}: one {shape} image needs about "
                    f"{_size(one)} in a generator step, {have}; use a smaller "
                    f"{names['image_size']}"
                )
            raise ResourceError(
                f"{names['batch_size']} {batch_size}: even one {shape} image needs about "
                f"{_size(one)} in a generator step, {have}"
            )
        if need.batch > room:
            beside = need.pool if need.pool + one <= room else 0  # what fits with the pool
            raise ResourceError(
                f"{names['batch_size']} {batch_size}: a batch of {shape} images needs about "
                f"{_size(need.batch)} in a generator step, {have}; use at most "
                f"{names['batch_size']} {(room - beside) // one}"
            )
        if need.pool + need.batch > room:
            fits = (room - need.batch) // (need.pool // replay_size)
            raise ResourceError(
                f"{names['replay_size']} {replay_size}: the replay pool needs about "
                f"{_size(need.pool)} ({replay_size} images of {shape} float32 with their "
                f"logits and labels) beside {_size(need.batch)} for a batch, {have}; use at "
                f"most {names['replay_size']} {fits}"
            )
    if host_available is not None:
        have = f"more than the {_size(host_available)} of memory free"
        used = need.pool + need.batch if on_cpu else 0
        if used + need.images > host_available:
            fits = max(host_available - used, 0) // (need.images // num_images)
            raise ResourceError(
                f"{names['num_images']} {num_images}: the synthesized images need about "
                f"{_size(need.images)} ({num_images} of {shape} float32 with their logits), "
                f"{have}; use at most {names['num_images']} {fits}, or several runs with "
                "other seeds"
            )
        if used + need.images + need.evaluation > host_available:
            raise ResourceError(
                f"{names['eval_limit']}: the {eval_images} evaluation images of {shape} need "
                f"about {_size(need.evaluation)} beside the run's other buffers, {have}; "
                f"evaluate on fewer with {names['eval_limit']} N"
            )
    return need


def check_disk(
    folder: str | os.PathLike[str],
    estimate: MemoryEstimate,
    *,
    replay_size: int = 0,
    free: int | None = None,
    names: Mapping[str, str] = OPTION_NAMES,
) -> None:
    """Refuse a replay pool whose checkpoint cannot be written to ``folder``'s disk.

    A checkpoint holds the replay pool and is written beside the previous one before
    replacing it: ``2 * estimate.checkpoint`` bytes must be free (a lower bound).

    Args:
        folder: the output folder (or where it will be made).
        estimate: the run's :func:`estimate_memory`.
        replay_size: the setting, for the message.
        free: the free bytes (default: :func:`available_disk` of ``folder``).
        names: how the message names each setting.

    Raises:
        ResourceError: one line naming the replay-size option.

    Example:
        >>> from risloss._resources import check_disk, estimate_memory
        >>> need = estimate_memory(image_shape=(3, 224, 224), num_classes=1000,
        ...                        batch_size=1, replay_size=4096)
        >>> try:
        ...     check_disk("runs/q", need, replay_size=4096, free=10**9)
        ... except ValueError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        --replay-size 4096: each checkpoint holds the replay pool, about 2.5 GB, and ...
    """
    room = available_disk(folder) if free is None else free
    if room is None or 2 * estimate.checkpoint <= room:
        return
    raise ResourceError(
        f"{names['replay_size']} {replay_size}: each checkpoint holds the replay pool, about "
        f"{_size(estimate.checkpoint)}, and needs twice that free while it is replaced; "
        f"{folder} has {_size(room)} free; use a smaller {names['replay_size']} or another "
        "output folder"
    )
