"""Data sets for measuring compressed models on real images.

Data-free compression never trains on these images; they are used to measure the teacher and the
compressed model (and, for the ``real`` reference row, as the ceiling a data-free method chases).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = [
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "DataFileError",
    "TensorImageDataset",
    "available_datasets",
    "load_dataset",
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


def _fashion_mnist_dir(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        return Path(env)
    return _FASHION_MNIST_SYSTEM_DIR


def _load_fashion_mnist(split: str, root: str | os.PathLike[str] | None) -> TensorImageDataset:
    folder = _fashion_mnist_dir(root)
    image_file, label_file, count = _FASHION_MNIST_FILES[split]
    if not (folder / image_file).is_file() or not (folder / label_file).is_file():
        downloaded = _try_torchvision_download(folder, split)
        if downloaded is None:
            raise DataFileError(
                f"Fashion-MNIST {split} files not found in {folder}. {_INSTALL_HINT}"
            )
        return downloaded
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
    return _normalized(images.unsqueeze(1), labels)


def _normalized(images_u8: torch.Tensor, labels: torch.Tensor) -> TensorImageDataset:
    x = (images_u8.float() / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return TensorImageDataset(
        x,
        labels,
        classes=FASHION_MNIST_CLASSES,
        mean=(FASHION_MNIST_MEAN,),
        std=(FASHION_MNIST_STD,),
    )


def _try_torchvision_download(folder: Path, split: str) -> TensorImageDataset | None:
    """Fall back to torchvision's downloader; ``None`` when the network does not allow it."""
    if os.environ.get("RISLOSS_NO_DOWNLOAD"):
        return None
    try:
        from torchvision.datasets import FashionMNIST

        ds = FashionMNIST(str(folder / "torchvision"), train=split == "train", download=True)
    except Exception:  # no network, read-only folder, ...: the caller explains how to install
        return None
    return _normalized(ds.data.unsqueeze(1), ds.targets)


def _load_torchvision_folder(name: str, split: str, root: str | None) -> Dataset:
    from torchvision import datasets, transforms

    if name == "cifar10":
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        folder = root or os.environ.get("RISLOSS_CIFAR10", "data/cifar10")
        try:
            return datasets.CIFAR10(folder, train=split == "train", download=False, transform=tf)
        except RuntimeError as exc:
            raise DataFileError(
                f"CIFAR-10 not found in {folder!r}: place torchvision's 'cifar-10-batches-py' "
                "folder there (root= or RISLOSS_CIFAR10), this loader does not download."
            ) from exc
    # ImageFolder: ImageNet-style preprocessing, the torchvision models' convention.
    path = Path(name.split(":", 1)[1])
    split_dir = path / split if (path / split).is_dir() else path
    if not split_dir.is_dir():
        raise DataFileError(f"image folder {split_dir} does not exist")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    return datasets.ImageFolder(str(split_dir), transform=tf)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset` (``imagefolder:PATH`` takes any path).

    Returns:
        The names, ``imagefolder:PATH`` standing for any folder.

    Example:
        >>> from risloss.data import available_datasets
        >>> available_datasets()
        ('fashion-mnist', 'cifar10', 'imagefolder:PATH')
    """
    return ("fashion-mnist", "cifar10", "imagefolder:PATH")


def load_dataset(name: str, split: str, *, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a labelled image data set, preprocessed as the shipped teachers expect.

    Args:
        name: ``"fashion-mnist"`` (read from the gzipped IDX files of the Debian package
            ``dataset-fashion-mnist``), ``"cifar10"`` (torchvision's files, not downloaded) or
            ``"imagefolder:PATH"`` (a torchvision ``ImageFolder``; ``PATH/train`` and
            ``PATH/test`` are used when they exist, else ``PATH`` itself).
        split: ``"train"`` or ``"test"``.
        root: folder holding the files. For Fashion-MNIST it defaults to the
            ``RISLOSS_FASHION_MNIST`` environment variable, then
            ``/usr/share/datasets/fashion-mnist``.

    Returns:
        A dataset of ``(image, label)``; for Fashion-MNIST a :class:`TensorImageDataset` of
        ``(1, 28, 28)`` images normalized with the training split's mean and std.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DataFileError: the files are missing (the message says how to install them), truncated
            or corrupt.

    Example:
        >>> from risloss.data import load_dataset
        >>> test = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
        >>> len(test), test[0][0].shape  # doctest: +SKIP
        (10000, torch.Size([1, 28, 28]))
        >>> load_dataset("fashion-mnist", "validation")
        Traceback (most recent call last):
        ...
        ValueError: split must be one of ('train', 'test'), got 'validation'
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, root)
    if name == "cifar10" or name.startswith("imagefolder:"):
        return _load_torchvision_folder(name, split, None if root is None else str(root))
    raise ValueError(f"name must be one of {available_datasets()}, got {name!r}")
