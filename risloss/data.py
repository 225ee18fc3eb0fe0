"""Data sets for measuring compressed models on real images.

Data-free compression never trains on these images; they are used to measure the teacher and the
compressed model (and, for the ``real`` reference row, as the ceiling a data-free method chases).

:func:`load_dataset` reads Fashion-MNIST, CIFAR-10/100, any ``ImageFolder`` and data sets built
by code (``package.module:factory``), and fits the images to the model with two options:
``image_size`` (resize the shorter side and center-crop to a square, or ``None`` to keep the
files' size) and ``normalize`` (a per-channel ``(mean, std)``, or ``None`` for models that take
pixels in ``[0, 1]``). Their defaults are each data set's convention: ImageNet-style
(resize to 256, crop 224, ImageNet mean and std) for ``imagefolder:``, the native size and the
training split's statistics for the others. On the command line they are ``--image-size N``
(``none`` to keep the size), ``--normalize MEAN STD`` (comma-separated, one value per channel)
and ``--no-normalize``; with a shipped teacher and data read from image files, the defaults are
the teacher's recorded input size and normalization (see
:func:`risloss.models.pretrained_info`).

:func:`check_compatible` runs one forward pass of the model on one image before any work and
turns a mismatch (channels, an image size the model does not accept, more classes in the data
than outputs in the model) into a one-line error that names both shapes and the options that
fix it; the trainers call it before their output folder is created.

:class:`InputSpec` records what a model takes as input: the image shape, the normalization of
its pixels (or ``"unknown"``), the range the generator's images are kept in and the options
named data sets are loaded with. :func:`load_for_model` loads a model's test data (by name, or
a ``Dataset`` object used as it is), checks it and resolves the record once; the trainers read
everything about the model's input from it.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import io
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = [
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "DataFileError",
    "ImageSize",
    "InputSpec",
    "Normalization",
    "TensorImageDataset",
    "available_datasets",
    "check_compatible",
    "load_dataset",
    "load_for_model",
    "read_idx",
]

FASHION_MNIST_ENV = "RISLOSS_FASHION_MNIST"
"""Environment variable naming a folder that holds the four Fashion-MNIST ``*.gz`` IDX files."""

_FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_MEAN = 0.2860
"""Mean pixel value (in [0, 1]) of the Fashion-MNIST training split."""
FASHION_MNIST_STD = 0.3530
"""Standard deviation of the pixel values (in [0, 1]) of the Fashion-MNIST training split."""

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
_SPLITS = ("train", "test")
_INSTALL_HINT = (
    "Install the Debian package with `apt-get install dataset-fashion-mnist` (files land in "
    f"{_FASHION_MNIST_SYSTEM_DIR}), or point root= or the {FASHION_MNIST_ENV} environment "
    "variable at a folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz."
)

# IDX type codes (http://yann.lecun.com/exdb/mnist/ format description) -> (dtype, item size).
_IDX_TYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


class DataFileError(RuntimeError):
    """A data file is missing, truncated or not in the expected format.

    Example:
        >>> from risloss.data import DataFileError, read_idx
        >>> try:
        ...     read_idx("no-such-file.gz")
        ... except DataFileError as err:
        ...     print(err)
        IDX file not found: no-such-file.gz
    """


def read_idx(path: str | os.PathLike[str], *, expected_ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file (gzipped or plain) into a tensor, checking its header and length.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed.
        expected_ndim: if given, the number of dimensions the header must declare.

    Returns:
        A tensor of the dtype and shape the header declares (big-endian data converted).

    Raises:
        DataFileError: the file is missing, its magic number is wrong, or it holds fewer or more
            bytes than its header declares (a truncated or corrupt download).

    Example:
        >>> import gzip, os, struct, tempfile
        >>> from risloss.data import read_idx
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx1-ubyte.gz")
        >>> with gzip.open(path, "wb") as fh:  # magic: 0, 0, type 0x08 (uint8), 1 dimension
        ...     _ = fh.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 8, 9]))
        >>> read_idx(path, expected_ndim=1)
        tensor([7, 8, 9], dtype=torch.uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"IDX file not found: {path}")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip raises these on truncated or corrupt streams
        raise DataFileError(f"cannot read {path}: {exc} (truncated or corrupt file?)") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype, itemsize = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataFileError(f"{path}: expected {expected_ndim} dimensions, header says {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for s in shape:
        count *= s
    if len(raw) - header != count * itemsize:
        raise DataFileError(
            f"{path}: header declares shape {tuple(shape)} ({count * itemsize} bytes of data) but "
            f"the file holds {len(raw) - header} bytes (truncated or corrupt file)"
        )
    data = torch.frombuffer(bytearray(raw[header:]), dtype=dtype)
    if itemsize > 1:
        data = data.view(torch.uint8).view(-1, itemsize).flip(1).reshape(-1).view(dtype)
    return data.reshape(shape).clone()


class TensorImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images and labels held as two tensors, preprocessed once.

    Attributes:
        images: float tensor ``(N, C, H, W)``, already normalized as the shipped teachers expect.
        labels: int64 tensor ``(N,)``.
        classes: class names, in label order.
        mean, std: per-channel normalization that was applied (useful to undo it for display).

    Raises:
        ValueError: ``images`` not ``(N, C, H, W)``, ``labels`` not ``(N,)``, or different
            ``N``.

    Example:
        >>> import torch
        >>> from risloss.data import TensorImageDataset
        >>> ds = TensorImageDataset(
        ...     torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 0]),
        ...     classes=["a", "b"], mean=[0.5], std=[0.25],
        ... )
        >>> len(ds), ds[1][1]
        (4, 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalized images back to pixel values in ``[0, 1]`` (clamped).

        Args:
            images: normalized images ``(B, C, H, W)``, such as :attr:`images` or a
                generator's output.

        Returns:
            ``clamp(images * std + mean, 0, 1)``, per channel.

        Example:
            >>> import torch
            >>> from risloss.data import TensorImageDataset
            >>> ds = TensorImageDataset(
            ...     torch.zeros(1, 1, 2, 2), torch.tensor([0]),
            ...     classes=["a"], mean=[0.5], std=[0.25],
            ... )
            >>> ds.denormalize(torch.tensor([[[[0.0, 1.0], [-4.0, 4.0]]]]))
            tensor([[[[0.5000, 0.7500],
                      [0.0000, 1.0000]]]])
        """
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


ImageSize = int | Literal["default"] | None
"""An image size option: a side ``S`` (resize the shorter side to ``S``, then center-crop to
``S x S``), ``None`` (keep the images' own size) or ``"default"`` (the data set's convention)."""

Normalization = tuple[Sequence[float], Sequence[float]] | Literal["default", "none"] | None
"""A normalization option: ``(mean, std)`` per channel (applied to pixels in ``[0, 1]``),
``None`` or ``"none"`` (images stay in ``[0, 1]``) or ``"default"`` (the data set's convention)."""

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""CIFAR-10's class names in label order (torchvision's)."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# name -> (torchvision class, display name, environment variable, torchvision's folder, mean, std)
_CIFAR = {
    "cifar10": (
        "CIFAR10", "CIFAR-10", "RISLOSS_CIFAR10", "cifar-10-batches-py",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": (
        "CIFAR100", "CIFAR-100", "RISLOSS_CIFAR100", "cifar-100-python",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}  # fmt: skip


def _default_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` that ``normalize="default"`` applies to data set ``name``.

    ``None`` for a data set built by code, which is used as its factory returns it.
    """
    if name == "fashion-mnist":
        return (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,)
    if name in _CIFAR:
        return _CIFAR[name][4], _CIFAR[name][5]
    if name.startswith("imagefolder:"):
        return _IMAGENET_MEAN, _IMAGENET_STD
    return None


def _image_size_option(value: Any, name: str = "image_size") -> ImageSize:
    """``value`` checked as an :data:`ImageSize` (``ValueError`` naming ``name`` otherwise)."""
    if value is None or value == "default":
        return cast(ImageSize, value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer, None (keep the images' size) or 'default', "
            f"got {value!r}"
        )
    return value


def _normalize_option(
    value: Any, name: str = "normalize"
) -> tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None:
    """``value`` checked as a :data:`Normalization`; ``"none"`` becomes ``None``, lists tuples."""
    if isinstance(value, str) and value in ("default", "none"):
        return "default" if value == "default" else None
    if value is None:
        return None
    problem = (
        f"{name} must be (mean, std) with one value per channel each (std > 0), None or 'none' "
        f"(images in [0, 1]) or 'default', got {value!r}"
    )
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(problem)
    try:
        mean = tuple(float(v) for v in value[0])
        std = tuple(float(v) for v in value[1])
    except (TypeError, ValueError):
        raise ValueError(problem) from None
    if (
        not mean
        or len(mean) != len(std)
        or not all(math.isfinite(v) for v in mean + std)
        or min(std) <= 0
    ):
        raise ValueError(problem)
    return mean, std


def _channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel statistics for ``channels`` channels (one value stands for every channel)."""
    if len(mean) not in (1, channels):
        raise ValueError(
            f"{name}: {len(mean)} mean and std values for images with {channels} channel(s); "
            f"give {'1' if channels == 1 else f'1 or {channels}'}"
        )
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    return tuple(mean) * channels, tuple(std) * channels


def _resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(..., H, W)`` so the shorter side is ``size``, then center-crop ``size x size``."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    from torchvision.transforms import functional as TF

    return TF.center_crop(TF.resize(images, [size], antialias=True), [size, size])


def _fashion_mnist_dir(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        return Path(env)
    return _FASHION_MNIST_SYSTEM_DIR


def _load_fashion_mnist(
    split: str,
    root: str | os.PathLike[str] | None,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> TensorImageDataset:
    folder = _fashion_mnist_dir(root)
    image_file, label_file, count = _FASHION_MNIST_FILES[split]
    if not (folder / image_file).is_file() or not (folder / label_file).is_file():
        downloaded, attempt = _from_torchvision(folder, split)
        if downloaded is None:
            raise DataFileError(
                f"Fashion-MNIST {split} files not found in {folder}; {attempt}. {_INSTALL_HINT}"
            )
        return _prepared(*downloaded, size, norm)
    images = read_idx(folder / image_file, expected_ndim=3)
    labels = read_idx(folder / label_file, expected_ndim=1)
    if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
        raise DataFileError(f"Fashion-MNIST files in {folder} are not uint8 IDX files")
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise DataFileError(
            f"Fashion-MNIST {split} split in {folder} should hold {count} 28x28 images and "
            f"{count} labels, found images {tuple(images.shape)} and labels {tuple(labels.shape)}"
        )
    if int(labels.max()) > 9:
        raise DataFileError(f"Fashion-MNIST labels in {folder} are outside 0..9 (corrupt file)")
    return _prepared(images.unsqueeze(1), labels, size, norm)


def _prepared(
    images_u8: torch.Tensor,
    labels: torch.Tensor,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> TensorImageDataset:
    """Fashion-MNIST pixels scaled to ``[0, 1]``, resized and normalized as asked."""
    x = images_u8.float() / 255.0
    if isinstance(size, int):
        x = _resize_crop(x, size)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    if norm is not None:
        given = ((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,)) if norm == "default" else norm
        mean, std = _channel_stats(*given, channels=1, name="normalize")
        x = (x - mean[0]) / std[0]
    return TensorImageDataset(x, labels, classes=FASHION_MNIST_CLASSES, mean=mean, std=std)


def _from_torchvision(
    folder: Path, split: str
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, str]:
    """Fashion-MNIST from torchvision: a copy it downloaded before under ``folder/torchvision``,
    or a new download. Returns ``(images, labels)`` or ``None`` with what was tried.

    Nothing is written under ``folder`` unless a download succeeded: the download goes to a
    temporary folder first.
    """
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        return None, "no download was tried (torchvision is not installed)"
    target = folder / "torchvision"
    train = split == "train"
    if (target / "FashionMNIST" / "raw").is_dir():
        try:
            ds = FashionMNIST(str(target), train=train, download=False)
            return (ds.data.unsqueeze(1), ds.targets), ""
        except RuntimeError:  # an incomplete earlier download: try again below
            pass
    if os.environ.get("RISLOSS_NO_DOWNLOAD"):
        return None, "no download was tried (RISLOSS_NO_DOWNLOAD is set)"
    with tempfile.TemporaryDirectory(prefix="risloss-fashion-mnist-") as tmp:
        try:
            # torchvision prints every mirror it tries; the error below says what happened.
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                ds = FashionMNIST(tmp, train=train, download=True)
        except Exception as exc:  # no network, a proxy, a bad checksum, ...
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[-1] if lines else type(exc).__name__
            return None, f"a download with torchvision was tried and failed ({reason})"
        data = (ds.data.unsqueeze(1), ds.targets)
        try:  # keep the files for the next run, where they were looked for
            shutil.copytree(Path(tmp) / "FashionMNIST", target / "FashionMNIST", dirs_exist_ok=True)
        except OSError:  # a read-only folder: the images are still used by this run
            pass
    return data, ""


def _read_image(path: str) -> Any:
    """Open an image file as RGB; an unreadable file is a one-line :class:`DataFileError`."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataFileError(f"cannot read image {path}: {exc}") from exc


def _pil_transform(
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
    default_size: tuple[int, int] | None,
    default_norm: tuple[tuple[float, ...], tuple[float, ...]],
) -> Any:
    """PIL image -> tensor: resize and crop (``default_size``: resize to, crop to), normalize."""
    from torchvision import transforms

    steps: list[Any] = []
    if size == "default" and default_size is not None:
        steps += [transforms.Resize(default_size[0]), transforms.CenterCrop(default_size[1])]
    elif isinstance(size, int):
        steps += [transforms.Resize(size), transforms.CenterCrop(size)]
    steps.append(transforms.ToTensor())
    if norm is not None:
        mean, std = default_norm if norm == "default" else norm
        steps.append(transforms.Normalize(mean, std))
    return transforms.Compose(steps)


def _check_rgb_stats(
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> None:
    if isinstance(norm, tuple):
        _channel_stats(*norm, channels=3, name="normalize")


def _load_cifar(
    name: str,
    split: str,
    root: str | None,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> Dataset:
    from torchvision import datasets

    cls_name, title, env, subfolder, mean, std = _CIFAR[name]
    _check_rgb_stats(norm)
    folder = root or os.environ.get(env, f"data/{name}")
    if (Path(folder) / split).is_dir():
        return _load_cifar_files(name, Path(folder) / split, size, norm)
    tf = _pil_transform(size, norm, None, (mean, std))
    try:
        return cast(
            Dataset,
            getattr(datasets, cls_name)(
                folder, train=split == "train", download=False, transform=tf
            ),
        )
    except RuntimeError as exc:
        raise DataFileError(
            f"{title} not found in {folder!r}: place torchvision's {subfolder!r} folder there "
            f"(root= or {env}), for instance with torchvision.datasets.{cls_name}({folder!r}, "
            "download=True) on a machine with internet access, or the images as files in "
            f"'train/<class>/' and 'test/<class>/' folders; this loader does not download"
        ) from exc


def _load_cifar_files(
    name: str,
    split_dir: Path,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> TensorImageDataset:
    """CIFAR from image files, one sub-folder per class named as torchvision names the
    classes (``airplane``, ``automobile``, ... for CIFAR-10), decoded once into tensors."""
    import numpy as np
    from torchvision.datasets.folder import IMG_EXTENSIONS

    _, title, _, _, mean, std = _CIFAR[name]
    classes = CIFAR10_CLASSES if name == "cifar10" else None
    try:
        found = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    except OSError as exc:
        raise DataFileError(f"{title} folder {split_dir} cannot be read: {exc}") from exc
    if classes is None:
        raise DataFileError(
            f"{title} from image files is not supported; give torchvision's files in "
            f"{split_dir.parent}"
        )
    if found != sorted(classes):
        raise DataFileError(
            f"{title} folder {split_dir} should hold one sub-folder per class, named "
            f"{', '.join(classes)}; found {', '.join(found) or 'none'}"
        )
    arrays, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(
            f for f in (split_dir / cls).iterdir() if f.name.lower().endswith(IMG_EXTENSIONS)
        )
        for f in files:
            image = _read_image(str(f))
            if image.size != (32, 32):
                raise DataFileError(f"{f}: a {title} image is 32x32, found {image.size}")
            arrays.append(np.asarray(image))
            labels.append(label)
    if not arrays:
        raise DataFileError(f"{title} folder {split_dir} holds no images")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    if isinstance(size, int):
        x = _resize_crop(x, size)
    stats: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0,) * 3, (1.0,) * 3)
    if norm is not None:
        stats = _channel_stats(*((mean, std) if norm == "default" else norm), 3, "normalize")
        x = (x - torch.tensor(stats[0]).view(1, 3, 1, 1)) / torch.tensor(stats[1]).view(1, 3, 1, 1)
    return TensorImageDataset(
        x.contiguous(), torch.tensor(labels), classes=classes, mean=stats[0], std=stats[1]
    )


def _load_image_folder(
    spec: str,
    split: str,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> Dataset:
    from torchvision import datasets
    from torchvision.datasets.folder import IMG_EXTENSIONS

    path = Path(spec.split(":", 1)[1])
    split_dir = path / split if (path / split).is_dir() else path
    if not split_dir.is_dir():
        raise DataFileError(f"image folder {split_dir} does not exist")
    _check_rgb_stats(norm)
    # ImageNet-style by default: the torchvision models' convention.
    tf = _pil_transform(size, norm, (256, 224), (_IMAGENET_MEAN, _IMAGENET_STD))
    layout = f"one sub-folder per class holding image files ({', '.join(IMG_EXTENSIONS)})"
    try:
        has_classes = any(entry.is_dir() for entry in split_dir.iterdir())
    except OSError as exc:
        raise DataFileError(f"image folder {split_dir} cannot be read: {exc}") from exc
    if not has_classes:
        raise DataFileError(f"image folder {split_dir} has no class sub-folders; expected {layout}")
    try:
        return datasets.ImageFolder(str(split_dir), transform=tf, loader=_read_image)
    except FileNotFoundError as exc:
        raise DataFileError(f"image folder {split_dir} holds no images; expected {layout}") from exc
    except OSError as exc:
        raise DataFileError(f"image folder {split_dir} cannot be read: {exc}") from exc


class _Transformed(Dataset[tuple[torch.Tensor, Any]]):
    """Another data set's ``(image, label)`` pairs with its images resized and normalized."""

    def __init__(
        self,
        dataset: Any,
        size: int | None,
        stats: tuple[tuple[float, ...], tuple[float, ...]] | None,
    ) -> None:
        self.dataset, self.size, self.stats = dataset, size, stats

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[index]
        if self.size is not None:
            image = _resize_crop(image, self.size)
        if self.stats is not None:
            mean, std = _channel_stats(*self.stats, channels=image.shape[-3], name="normalize")
            m = torch.tensor(mean, dtype=image.dtype).view(-1, 1, 1)
            s = torch.tensor(std, dtype=image.dtype).view(-1, 1, 1)
            image = (image - m) / s
        return image, label


def _load_from_code(
    spec: str,
    split: str,
    size: ImageSize,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | Literal["default"] | None,
) -> Dataset:
    from risloss._imports import call_factory, import_factory

    factory = import_factory(spec, what="data")
    try:
        inspect.signature(factory).bind(split)
    except TypeError:
        raise ValueError(
            f"data {spec!r}: the factory must take one argument, the split ('train' or 'test')"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    dataset = call_factory(factory, spec, split, what="data")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(
            f"data {spec!r}: the factory returned {type(dataset).__name__}, expected a torch "
            "Dataset of (image, label) pairs"
        )
    resize = size if isinstance(size, int) else None
    stats = norm if isinstance(norm, tuple) else None
    if resize is None and stats is None:
        return cast(Dataset, dataset)
    return _Transformed(dataset, resize, stats)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset` (``imagefolder:PATH`` takes any path).

    Returns:
        The names; ``imagefolder:PATH`` stands for any folder and ``package.module:factory``
        for any data set built by code.

    Example:
        >>> from risloss.data import available_datasets
        >>> available_datasets()
        ('fashion-mnist', 'cifar10', 'cifar100', 'imagefolder:PATH', 'package.module:factory')
    """
    return ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "package.module:factory")


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: ImageSize = "default",
    normalize: Normalization = "default",
) -> Dataset:
    """Load a labelled image data set, resized and normalized to fit a model.

    Args:
        name: ``"fashion-mnist"`` (read from the gzipped IDX files of the Debian package
            ``dataset-fashion-mnist``), ``"cifar10"`` or ``"cifar100"`` (torchvision's files,
            never downloaded; CIFAR-10 also as image files in ``train/<class>/`` and
            ``test/<class>/`` folders), ``"imagefolder:PATH"`` (a torchvision ``ImageFolder``:
            ``PATH/train`` and ``PATH/test`` are used when they exist, else ``PATH`` itself,
            with one sub-folder per class) or ``"package.module:factory"``: a function called
            with the split (``"train"`` or ``"test"``) that returns a torch ``Dataset`` of
            ``(image, label)`` pairs, images as ``(C, H, W)`` float tensors.
        split: ``"train"`` or ``"test"``.
        root: folder holding the files. For Fashion-MNIST it defaults to the
            ``RISLOSS_FASHION_MNIST`` environment variable, then
            ``/usr/share/datasets/fashion-mnist``; for CIFAR to ``RISLOSS_CIFAR10`` or
            ``RISLOSS_CIFAR100``, then ``data/cifar10`` or ``data/cifar100``.
        image_size: ``S`` resizes the shorter side of every image to ``S`` and center-crops
            it to ``S x S``; ``None`` keeps the images' own size. ``"default"``: resize to 256
            and crop to 224 for ``imagefolder:`` (ImageNet style), the images' own size for
            the others (28 for Fashion-MNIST, 32 for CIFAR).
        normalize: ``(mean, std)``, one value per channel (or one for all), applied to pixel
            values in ``[0, 1]``; ``None`` or ``"none"`` leaves the images in ``[0, 1]``.
            ``"default"``: the ImageNet mean and std for ``imagefolder:``, the training
            split's statistics for Fashion-MNIST (those the shipped teachers were trained
            with, see :func:`risloss.models.pretrained_info`) and CIFAR. A data set from code
            is used as its factory returns it unless ``image_size`` or ``normalize`` is given
            (its images should then be in ``[0, 1]``).

    Returns:
        A dataset of ``(image, label)``; for Fashion-MNIST a :class:`TensorImageDataset`
        (by default ``(1, 28, 28)`` images normalized with the training split's mean and std).

    Raises:
        ValueError: an unknown ``name`` or ``split``, an ``image_size`` or ``normalize`` that is
            not one of the forms above (or has more values than the images have channels), or
            a ``package.module:factory`` that cannot be imported or does not return a data set.
        DataFileError: the files are missing (the message says how to get them and whether a
            download was tried), truncated or corrupt, or an image folder is empty or
            unreadable.

    Example:
        >>> from risloss.data import load_dataset
        >>> test = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
        >>> len(test), test[0][0].shape  # doctest: +SKIP
        (10000, torch.Size([1, 28, 28]))
        >>> pixels = load_dataset(  # doctest: +SKIP
        ...     "fashion-mnist", "test", image_size=32, normalize=None
        ... )
        >>> pixels[0][0].shape, float(pixels.images.min()) >= 0.0  # doctest: +SKIP
        (torch.Size([1, 32, 32]), True)
        >>> load_dataset("fashion-mnist", "validation")
        Traceback (most recent call last):
        ...
        ValueError: split must be one of ('train', 'test'), got 'validation'
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    size = _image_size_option(image_size)
    norm = _normalize_option(normalize)
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, root, size, norm)
    if name in _CIFAR:
        return _load_cifar(name, split, None if root is None else str(root), size, norm)
    if name.startswith("imagefolder:") and len(name) > len("imagefolder:"):
        return _load_image_folder(name, split, size, norm)
    if ":" in name and not name.startswith("imagefolder:"):
        return _load_from_code(name, split, size, norm)
    raise ValueError(f"name must be one of {available_datasets()}, got {name!r}")


def _labels(dataset: Any) -> list[int] | None:
    """Every label of a data set when it holds them (``labels``/``targets``), else ``None``."""
    if isinstance(dataset, Subset):
        inner = _labels(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    if isinstance(dataset, _Transformed):
        return _labels(dataset.dataset)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        labels = dataset.tensors[1]
        return [int(v) for v in labels.tolist()] if labels.ndim == 1 else None
    for attr in ("labels", "targets"):
        values = getattr(dataset, attr, None)
        if isinstance(values, torch.Tensor) and values.ndim == 1:
            return [int(v) for v in values.tolist()]
        if isinstance(values, list) and all(isinstance(v, int) for v in values):
            return list(values)
    return None


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def check_compatible(
    model: nn.Module, dataset: Any, *, input_shape: Sequence[int] | None = None
) -> None:
    """Check that ``model`` accepts ``dataset``'s images and has an output for every label.

    One forward pass on the first image (in eval mode, without gradients; the model's mode is
    restored and its state is not changed) checks the channels, that the image size is
    accepted, and that the model has at least as many outputs as the labels need.

    Args:
        model: a classifier returning logits ``(B, num_classes)``.
        dataset: yields ``(image, label)`` pairs with ``(C, H, W)`` float images.
        input_shape: the ``(C, H, W)`` the model was trained on, when known (a shipped
            teacher's ``input_shape``); images of another shape are then refused even if the
            forward pass works.

    Raises:
        ValueError: an empty data set, images that are not ``(C, H, W)`` tensors, or a
            mismatch: one line naming the data's image shape, what the model takes, and the
            options that fix it (``--image-size``/``image_size=``, another model or data).
        DataFileError: the first image cannot be read.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from risloss.data import check_compatible
        >>> from risloss.models import resnet8
        >>> model = resnet8(num_classes=10, in_channels=3, image_size=16)
        >>> check_compatible(model, TensorDataset(torch.rand(4, 3, 16, 16), torch.arange(4)))
        >>> gray = TensorDataset(torch.rand(4, 1, 16, 16), torch.arange(4))
        >>> check_compatible(model, gray)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the data's images are (1, 16, 16) but the model takes 3-channel images ...
        >>> many = TensorDataset(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 99]))
        >>> check_compatible(model, many)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the data's labels span 0..99 but the model has 10 outputs ...
    """
    if len(dataset) == 0:
        raise ValueError("the data set is empty: it holds no (image, label) pairs")
    item = dataset[0]
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise ValueError(
            f"the data set must yield (image, label) pairs, its first item is {type(item).__name__}"
        )
    image, label = item
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"the data set's images must be (C, H, W) float tensors, its first image is {got}"
        )
    shape = tuple(int(v) for v in image.shape)
    resize = "resize the data with --image-size N (image_size= of load_dataset)"
    if input_shape is not None and tuple(input_shape) != shape:
        expected = tuple(int(v) for v in input_shape)
        fix = (
            resize
            if expected[0] == shape[0]
            else f"use data with {expected[0]} channel(s) or a model for {shape[0]}-channel images"
        )
        raise ValueError(f"the data's images are {shape} but the model takes {expected}; {fix}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(image.unsqueeze(0).to(device))
    except (RuntimeError, ValueError, TypeError) as exc:
        conv = _first_conv(model)
        if conv is not None and conv.in_channels != shape[0]:
            raise ValueError(
                f"the data's images are {shape} but the model takes {conv.in_channels}-channel "
                f"images (its first convolution has in_channels={conv.in_channels}); use a "
                f"model for {shape[0]}-channel images or data with {conv.in_channels} channel(s)"
            ) from exc
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ValueError(
            f"the model does not accept the data's images of shape {shape} "
            f"({type(exc).__name__}: {reason}); {resize}, or use a model for such images"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model must return logits (B, num_classes); on one {shape} image it returned {got}"
        )
    classes = int(out.shape[1])
    labels = _labels(dataset)
    if labels is None:
        try:
            labels = [int(label)]
        except (TypeError, ValueError):
            raise ValueError(
                f"the data set's labels must be integers, its first label is {label!r}"
            ) from None
    low, high = min(labels), max(labels)
    if low < 0 or high >= classes:
        raise ValueError(
            f"the data's labels span {low}..{high} but the model has {classes} outputs (logits "
            f"{tuple(out.shape)} for a {shape} image); use a model with at least {high + 1} "
            f"classes or data with labels in 0..{classes - 1}"
        )


_Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _from_code(data: str | None) -> bool:
    """Whether ``data`` is built by code: a ``package.module:factory`` name, or ``None`` for a
    data set passed as an object."""
    return data is None or (":" in data and not data.startswith("imagefolder:"))


def _load_options(
    data: str | None, image_size: Any, normalize: Any, metadata: Mapping[str, Any]
) -> tuple[ImageSize, Any]:
    """The ``image_size`` and ``normalize`` a named data set is loaded with for a model.

    Where an option says ``"default"`` and ``metadata`` (a shipped teacher's) records the input
    size and normalization, those are used for data read from image files; a data set built by
    code is left as its factory returns it.
    """
    size = _image_size_option(image_size)
    norm = _normalize_option(normalize)
    if _from_code(data):
        return size, norm
    shape = metadata.get("input_shape")
    if size == "default" and shape is not None and shape[1] == shape[2]:
        size = int(shape[1])
    prep = metadata.get("preprocessing") or {}
    if norm == "default" and "mean" in prep and "std" in prep:
        norm = (tuple(prep["mean"]), tuple(prep["std"]))
    return size, norm


def _model_normalization(
    data: str | None, normalize: Any, metadata: Mapping[str, Any]
) -> _Stats | Literal["unknown"] | None:
    """How the model's inputs relate to pixels in ``[0, 1]`` (values as given, not per channel)."""
    norm: Any = _normalize_option(normalize)
    if norm == "default":
        prep = metadata.get("preprocessing") or {}
        if "mean" in prep and "std" in prep:
            return tuple(prep["mean"]), tuple(prep["std"])
        norm = None if data is None else _default_normalization(data)
        if norm is None:
            return "unknown"
    return None if norm is None else (tuple(norm[0]), tuple(norm[1]))


def _range_option(value: Any, normalization: Any, channels: int) -> _Stats | None:
    """The per-channel ``(low, high)`` an ``input_range`` option asks for (``None``: unbounded)."""
    if value is None or value == "none":
        return None
    if value == "auto":
        if normalization == "unknown":
            return None
        if normalization is None:
            return (0.0,) * channels, (1.0,) * channels
        mean, std = normalization
        return (
            tuple((0.0 - m) / s for m, s in zip(mean, std, strict=True)),
            tuple((1.0 - m) / s for m, s in zip(mean, std, strict=True)),
        )
    problem = f"input_range must be 'auto', 'none' or (low, high), got {value!r}"
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(problem)
    low, high = (tuple(float(v) for v in (b if isinstance(b, Sequence) else (b,))) for b in value)
    if len(low) not in (1, channels) or len(high) != len(low):
        raise ValueError(
            f"input_range must have 1 or {channels} values per bound (one per image channel), "
            f"got {len(low)}"
        )
    return (low * channels, high * channels) if len(low) == 1 else (low, high)


@attrs.frozen(kw_only=True)
class InputSpec:
    """What a model takes as input, resolved once for a run from the model's metadata, the
    data options and the data.

    A shipped teacher records its input size and normalization
    (:func:`risloss.models.pretrained_info`); a model of your own is described by the data
    options (``image_size``, ``normalize``) and by the images of its test data.
    :meth:`resolve` applies the rules; the trainers read everything about the model's input
    from the record: how named data sets are loaded (:meth:`load`), the generator's output
    range and how synthesized images map back to pixels.

    Attributes:
        channels: the number of channels of an input image.
        height: its height.
        width: its width.
        normalization: ``(mean, std)`` per channel that pixels in ``[0, 1]`` are normalized
            with before they reach the model; ``None``: the model takes the pixels as they
            are; ``"unknown"``: data built by code (or passed as an object) with
            ``normalize="default"`` and no recorded normalization.
        input_range: per-channel ``(low, high)`` the generator's images are clamped to
            (``None``: unbounded).
        image_size: the ``image_size`` named data sets are loaded with
            (:func:`load_dataset`).
        normalize: the ``normalize`` named data sets are loaded with.

    Example:
        >>> from risloss.data import InputSpec
        >>> spec = InputSpec.resolve(
        ...     (3, 32, 32), data="cifar10", normalize=((0.5,), (0.25,)), input_range="auto"
        ... )
        >>> spec.shape, spec.normalization
        ((3, 32, 32), ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
        >>> spec.input_range
        ((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))
        >>> InputSpec.resolve((1, 28, 28), data=None).normalization  # an object from code
        'unknown'
    """

    channels: int
    height: int
    width: int
    normalization: _Stats | Literal["unknown"] | None
    input_range: _Stats | None = None
    image_size: ImageSize = "default"
    normalize: _Stats | Literal["default"] | None = "default"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``."""
        return (self.channels, self.height, self.width)

    @property
    def pixel_range(self) -> _Stats | None:
        """Per-channel ``(low, high)`` of pixels in ``[0, 1]`` in the model's input space
        (``None`` where the normalization is unknown)."""
        return _range_option("auto", self.normalization, self.channels)

    @classmethod
    def resolve(
        cls,
        shape: Sequence[int],
        *,
        data: str | None,
        image_size: Any = "default",
        normalize: Any = "default",
        input_range: Any = "none",
        metadata: Mapping[str, Any] | None = None,
    ) -> InputSpec:
        """The record of a model whose data have images of ``shape``.

        Args:
            shape: ``(C, H, W)`` of the data's images.
            data: the data set's name (:func:`load_dataset`), or ``None`` for a data set
                passed as an object (treated as data built by code, used as it is).
            image_size: as :func:`load_dataset` takes it; ``"default"`` becomes the recorded
                input size of a shipped teacher for data read from files.
            normalize: as :func:`load_dataset` takes it; ``"default"`` becomes the recorded
                normalization of a shipped teacher, else the data set's own (unknown for data
                built by code).
            input_range: ``"none"``, ``"auto"`` (pixels in ``[0, 1]`` under the
                normalization; unbounded where it is unknown) or ``(low, high)``, one number
                or one per channel each.
            metadata: a shipped teacher's :func:`~risloss.models.pretrained_info` (``None`` or
                empty for a model of your own).

        Raises:
            ValueError: a malformed option, or statistics or bounds with another number of
                values than 1 or the number of channels.
        """
        meta = metadata or {}
        c, h, w = (int(v) for v in shape)
        norm = _model_normalization(data, normalize, meta)
        if isinstance(norm, tuple):
            norm = _channel_stats(norm[0], norm[1], c, "normalize")
        size, load_norm = _load_options(data, image_size, normalize, meta)
        return cls(
            channels=c,
            height=h,
            width=w,
            normalization=norm,
            input_range=_range_option(input_range, norm, c),
            image_size=size,
            normalize=load_norm,
        )

    def load(self, data: str | Dataset, split: str) -> Dataset:
        """``split`` of a data set by name, loaded with this record's options, or a data set
        object as it is."""
        if isinstance(data, str):
            return load_dataset(data, split, image_size=self.image_size, normalize=self.normalize)
        return _dataset_object(data, "data")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the fields.

        Example:
            >>> from risloss.data import InputSpec
            >>> spec = InputSpec.resolve((1, 8, 8), data=None, normalize=None, input_range="auto")
            >>> spec.to_dict()["input_range"]
            [[0.0], [1.0]]
        """

        def plain(value: Any) -> Any:
            return [plain(v) for v in value] if isinstance(value, tuple) else value

        return {name: plain(value) for name, value in attrs.asdict(self).items()}


def _dataset_object(data: Any, name: str) -> Dataset:
    if isinstance(data, str) or not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(
            f"{name} must be a data set name or a torch Dataset of (image, label) pairs, got "
            f"{type(data).__name__}"
        )
    return cast(Dataset, data)


def load_for_model(
    model: nn.Module,
    data: str | Dataset,
    *,
    image_size: Any = "default",
    normalize: Any = "default",
    input_range: Any = "none",
    metadata: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> tuple[Dataset, InputSpec]:
    """The test data of a model, checked against it, and the model's :class:`InputSpec`.

    A named data set is loaded with the options the record resolves (a shipped teacher's
    recorded input size and normalization where an option says ``"default"``); a
    ``Dataset`` object is used as it is (``image_size`` and ``normalize`` are not applied to
    it; ``normalize`` then only says how its images are normalized). The first ``limit``
    images are kept, then :func:`check_compatible` runs one forward pass.

    Args:
        model: the classifier.
        data: a name as :func:`load_dataset` takes it, or a ``Dataset`` of ``(image, label)``
            pairs.
        image_size: as :meth:`InputSpec.resolve` takes it.
        normalize: as :meth:`InputSpec.resolve` takes it.
        input_range: as :meth:`InputSpec.resolve` takes it.
        metadata: as :meth:`InputSpec.resolve` takes it.
        limit: keep only the first ``limit`` images (``None``: all).

    Returns:
        ``(test data, record)``.

    Raises:
        ValueError: bad options, or a model and data that do not fit.
        TypeError: ``data`` neither a name nor a data set.
        DataFileError: the data's files are missing or unreadable.

    Example:
        >>> import torch
        >>> from risloss import data, models
        >>> images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
        >>> pixels = torch.utils.data.TensorDataset(images, labels)  # images in [0, 1]
        >>> net = models.resnet8(num_classes=2, in_channels=3, image_size=16)
        >>> test, spec = data.load_for_model(net, pixels, normalize=None, input_range="auto")
        >>> spec.shape, spec.input_range
        ((3, 16, 16), ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    """
    meta = metadata or {}
    name = data if isinstance(data, str) else None
    if name is None:
        dataset = _dataset_object(data, "data")
    else:
        size, norm = _load_options(name, image_size, normalize, meta)
        dataset = load_dataset(name, "test", image_size=size, normalize=norm)
    if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
        dataset = Subset(dataset, range(limit))
    check_compatible(model, dataset, input_shape=meta.get("input_shape"))
    shape = tuple(dataset[0][0].shape)
    spec = InputSpec.resolve(
        shape,
        data=name,
        image_size=image_size,
        normalize=normalize,
        input_range=input_range,
        metadata=meta,
    )
    return dataset, spec
