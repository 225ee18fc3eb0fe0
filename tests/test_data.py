from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from risloss.data import (
    FASHION_MNIST_ENV,
    DataFileError,
    TensorImageDataset,
    load_dataset,
    read_idx,
)
from tests._data import fashion_mnist_or_skip


def _write_idx(path: Path, data: torch.Tensor, *, gz: bool = True, truncate: int = 0) -> None:
    header = bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    payload = header + data.to(torch.uint8).numpy().tobytes()
    if truncate:
        payload = payload[:-truncate]
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def _fake_fashion(folder: Path, n_train: int = 60000, n_test: int = 10000) -> None:
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    data = torch.randint(0, 256, (5, 3, 2), dtype=torch.uint8)
    _write_idx(tmp_path / "a.gz", data)
    _write_idx(tmp_path / "b", data, gz=False)
    assert torch.equal(read_idx(tmp_path / "a.gz"), data)
    assert torch.equal(read_idx(tmp_path / "b"), data)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    values = [1, 256, 65536, -2]
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 4) + struct.pack(">4i", *values)
    (tmp_path / "i").write_bytes(raw)
    assert read_idx(tmp_path / "i").tolist() == values


def test_read_idx_rejects_truncated_and_bad_magic(tmp_path: Path) -> None:
    _write_idx(tmp_path / "t.gz", torch.zeros(4, 2, 2), truncate=3)
    with pytest.raises(DataFileError, match="truncated"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataFileError, match="magic"):
        read_idx(tmp_path / "bad")
    # A gzip stream cut in the middle.
    good = tmp_path / "g.gz"
    _write_idx(good, torch.zeros(100, 28, 28))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataFileError):
        read_idx(cut)


def test_missing_files_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISLOSS_NO_DOWNLOAD", "1")
    with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


def test_wrong_count_is_rejected(tmp_path: Path) -> None:
    _fake_fashion(tmp_path, n_test=999)
    with pytest.raises(DataFileError, match="10000"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


def test_env_variable_overrides_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_fashion(tmp_path, n_train=60000, n_test=10000)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    ds = load_dataset("fashion-mnist", "test")
    assert isinstance(ds, TensorImageDataset)
    assert len(ds) == 10000
    assert ds.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("fashion-mnist", "validation")
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("mnist-but-not", "test")


def test_real_fashion_mnist() -> None:
    test = fashion_mnist_or_skip("test")
    assert len(test) == 10000
    x, y = test[0]
    assert x.shape == (1, 28, 28) and 0 <= y <= 9
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # Normalized with the training split's statistics: test-split moments are close to (0, 1).
    assert abs(float(test.images.mean())) < 0.05
    assert abs(float(test.images.std()) - 1.0) < 0.05
    pixels = test.denormalize(test.images[:4])
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0


# Options that fit the model: image size, normalization, data sets from code ---------------------


def _png_folder(root: Path, classes: int = 2, per_class: int = 3, size: tuple[int, int] = (16, 16)):
    """An ImageFolder of random RGB PNGs, ``root/class_k/img_i.png``; the pixels, in [0, 1]."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    pixels = {}
    for k in range(classes):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(per_class):
            img = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(img.numpy()).save(root / f"class_{k}" / f"img_{i}.png")
            pixels[(k, i)] = img.permute(2, 0, 1).float() / 255.0
    return pixels


def test_image_folder_default_is_imagenet_style(tmp_path: Path) -> None:
    pixels = _png_folder(tmp_path / "data")
    ds = load_dataset(f"imagefolder:{tmp_path / 'data'}", "test")
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and y == 0
    assert float(x.min()) < 0.0  # normalized with the ImageNet statistics
    assert len(ds) == len(pixels)


def test_image_folder_options_change_size_and_range(tmp_path: Path) -> None:
    pixels = _png_folder(tmp_path / "data")
    name = f"imagefolder:{tmp_path / 'data'}"
    raw = load_dataset(name, "test", image_size=None, normalize=None)
    x, y = raw[4]  # sorted: class_1/img_1.png
    assert (x.shape, y) == ((3, 16, 16), 1)
    assert torch.allclose(x, pixels[(1, 1)])  # the file's own pixels, in [0, 1]
    assert torch.equal(load_dataset(name, "test", image_size=16, normalize="none")[4][0], x)
    small = load_dataset(name, "test", image_size=8, normalize=None)[4][0]
    assert small.shape == (3, 8, 8) and 0.0 <= float(small.min()) <= float(small.max()) <= 1.0
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    norm = load_dataset(name, "test", image_size=None, normalize=(mean, std))[4][0]
    expected = (pixels[(1, 1)] - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(norm, expected, atol=1e-6)
    one = load_dataset(name, "test", image_size=None, normalize=((0.5,), (0.25,)))[4][0]
    assert torch.allclose(one, (pixels[(1, 1)] - 0.5) / 0.25, atol=1e-6)


def test_image_folder_resize_crops_the_center(tmp_path: Path) -> None:
    pixels = _png_folder(tmp_path / "data", classes=1, per_class=1, size=(24, 16))  # W 24, H 16
    name = f"imagefolder:{tmp_path / 'data'}"
    x = load_dataset(name, "test", image_size=16, normalize=None)[0][0]
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x, pixels[(0, 0)][:, :, 4:20])  # shorter side kept, centre 16 columns


def _fake_fashion_random(folder: Path) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    test = torch.randint(0, 256, (10000, 28, 28), generator=gen, dtype=torch.uint8)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", test)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", torch.arange(10000) % 10)
    return test


def test_fashion_mnist_default_and_options(tmp_path: Path) -> None:
    from risloss.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    raw = _fake_fashion_random(tmp_path)
    default = load_dataset("fashion-mnist", "test", root=tmp_path)
    # The default is what the shipped teachers were trained on, bit for bit.
    expected = (raw.unsqueeze(1).float() / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert torch.equal(default.images, expected)
    pixels = load_dataset("fashion-mnist", "test", root=tmp_path, normalize=None, image_size=32)
    assert pixels.images.shape == (10000, 1, 32, 32)
    assert float(pixels.images.min()) >= 0.0 and float(pixels.images.max()) <= 1.0
    assert (pixels.mean, pixels.std) == ((0.0,), (1.0,))
    same = load_dataset("fashion-mnist", "test", root=tmp_path, normalize=((0.5,), (0.5,)))
    assert torch.allclose(same.images, raw.unsqueeze(1).float() / 127.5 - 1.0, atol=1e-6)
    assert torch.allclose(same.denormalize(same.images), raw.unsqueeze(1).float() / 255.0)


def test_shipped_teachers_record_the_default_normalization() -> None:
    from risloss.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from risloss.models import list_pretrained

    for name, meta in list_pretrained().items():
        prep = meta["preprocessing"]
        if meta["dataset"] == "fashion-mnist":
            assert (prep["mean"], prep["std"]) == ([FASHION_MNIST_MEAN], [FASHION_MNIST_STD]), name
        else:
            assert meta["dataset"] == "cifar10", name
            default = ([0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616])
            assert (prep["mean"], prep["std"]) == default, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"image_size": "big"}, "image_size must be"),
        ({"image_size": True}, "image_size must be"),
        ({"normalize": ((0.5,), (0.0,))}, "normalize must be"),
        ({"normalize": ((0.5, 0.5), (0.2,))}, "normalize must be"),
        ({"normalize": "imagenet"}, "normalize must be"),
        ({"normalize": ((0.1, 0.2, 0.3), (1, 1, 1))}, "normalize: 3 mean and std values"),
    ],
)
def test_bad_data_options(kwargs: dict, match: str, tmp_path: Path) -> None:
    _fake_fashion(tmp_path, n_train=60000, n_test=10000)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset("fashion-mnist", "test", root=tmp_path, **kwargs)
    assert "\n" not in str(err.value)


_FACTORY = """
import torch
from torch.utils.data import TensorDataset


def make(split):
    n = 6 if split == "train" else 4
    images = torch.linspace(0, 1, n * 3 * 8 * 8).reshape(n, 3, 8, 8)
    return TensorDataset(images, torch.arange(n) % 2)


def no_split():
    return make("test")


def not_a_dataset(split):
    return 42
"""


def _factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_data_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_data_set_from_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _factory_module(tmp_path, monkeypatch)
    test = load_dataset(f"{module}:make", "test")
    train = load_dataset(f"{module}:make", "train")
    assert (len(test), len(train)) == (4, 6)  # the factory is called with the split
    x, y = test[1]
    assert x.shape == (3, 8, 8) and int(y) == 1
    resized = load_dataset(f"{module}:make", "test", image_size=4, normalize=((0.5,), (0.5,)))
    z, _ = resized[1]
    assert z.shape == (3, 4, 4)
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0
    unscaled = load_dataset(f"{module}:make", "test", image_size=4)[1][0]
    assert torch.allclose(z, unscaled * 2.0 - 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        ("no_split", "must take one argument, the split"),
        ("not_a_dataset", "returned int, expected a torch Dataset"),
        ("missing", "has no attribute 'missing'"),
    ],
)
def test_bad_data_factory(
    factory: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _factory_module(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(f"{module}:{factory}", "test")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot import module"):
        load_dataset("no_such_module_anywhere:make", "test")


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (folders map to ``"dir"``)."""
    import hashlib

    if not root.exists():
        return {}
    tree = {}
    for p in sorted(root.rglob("*")):
        content = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        tree[str(p.relative_to(root))] = content
    return tree


def test_empty_or_unreadable_image_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileError, match="no class sub-folders") as err:
        load_dataset(f"imagefolder:{empty}", "test")
    assert "\n" not in str(err.value)
    (empty / "cats").mkdir()
    (empty / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(DataFileError, match="holds no images") as err:
        load_dataset(f"imagefolder:{empty}", "test")
    assert "\n" not in str(err.value)
    with pytest.raises(DataFileError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}", "test")
    (empty / "cats" / "broken.png").write_bytes(b"not a png at all")
    ds = load_dataset(f"imagefolder:{empty}", "test")
    with pytest.raises(DataFileError, match=r"cannot read image .*broken\.png") as err:
        ds[0]
    assert "\n" not in str(err.value)


def test_cifar100_is_never_downloaded(tmp_path: Path) -> None:
    folder = tmp_path / "cifar"
    before = _tree(tmp_path)
    for name, sub in (("cifar100", "cifar-100-python"), ("cifar10", "cifar-10-batches-py")):
        with pytest.raises(DataFileError, match=f"not found in '{folder}'") as err:
            load_dataset(name, "test", root=folder)
        assert sub in str(err.value) and "\n" not in str(err.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("exists", [True, False])
def test_missing_fashion_mnist_creates_nothing(
    exists: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import FashionMNIST

    folder = tmp_path / "fmnist"
    if exists:
        folder.mkdir()
        (folder / "README").write_text("the files go here\n")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    before = _tree(tmp_path)
    # No download possible: the message says none was tried.
    monkeypatch.setenv("RISLOSS_NO_DOWNLOAD", "1")
    with pytest.raises(DataFileError, match="no download was tried") as err:
        load_dataset("fashion-mnist", "test")
    assert "\n" not in str(err.value)
    assert _tree(tmp_path) == before
    # A download that fails (a closed local port instead of the network): nothing is left.
    monkeypatch.delenv("RISLOSS_NO_DOWNLOAD")
    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataFileError, match="download with torchvision was tried") as err:
        load_dataset("fashion-mnist", "test")
    assert "\n" not in str(err.value)
    assert _tree(tmp_path) == before


# check_compatible ---------------------------------------------------------------------------------


class _FixedSize(torch.nn.Module):
    """A model that takes only 3x16x16 images (its linear layer fixes the size)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 16 * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def _images(n: int, shape: tuple[int, ...], labels: list[int] | None = None):
    from torch.utils.data import TensorDataset

    y = torch.tensor(labels) if labels is not None else torch.arange(n) % 3
    return TensorDataset(torch.rand(n, *shape), y)


def test_check_compatible_accepts_a_fitting_pair_and_changes_nothing() -> None:
    from risloss.data import check_compatible

    model = _FixedSize().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    check_compatible(model, _images(5, (3, 16, 16)))
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm statistics untouched


@pytest.mark.parametrize(
    ("data", "input_shape", "pieces"),
    [
        (((1, 16, 16), None), None, ["(1, 16, 16)", "3-channel", "in_channels=3"]),
        (((3, 8, 8), None), None, ["(3, 8, 8)", "--image-size", "image_size="]),
        (((3, 16, 16), [0, 1, 7]), None, ["0..7", "3 outputs", "at least 8 classes"]),
        (((3, 16, 16), [0, -1, 2]), None, ["-1..2", "3 outputs"]),
        (((3, 16, 16), None), [3, 32, 32], ["(3, 16, 16)", "(3, 32, 32)", "--image-size"]),
        (((3, 16, 16), None), [1, 16, 16], ["(3, 16, 16)", "(1, 16, 16)", "channel"]),
    ],
)
def test_check_compatible_names_both_shapes_and_the_fix(
    data: tuple, input_shape: list[int] | None, pieces: list[str]
) -> None:
    from risloss.data import check_compatible

    shape, labels = data
    model = _FixedSize()
    with pytest.raises(ValueError) as err:
        check_compatible(model, _images(3, shape, labels), input_shape=input_shape)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, (piece, message)


def test_check_compatible_empty_data_and_subsets() -> None:
    from torch.utils.data import Subset

    from risloss.data import check_compatible

    model = _FixedSize()
    with pytest.raises(ValueError, match="empty"):
        check_compatible(model, _images(0, (3, 16, 16), []))
    # Only the labels of the evaluated subset count.
    data = _images(4, (3, 16, 16), [0, 1, 2, 9])
    check_compatible(model, Subset(data, range(3)))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        check_compatible(model, data)


# The record of a model's input ------------------------------------------------------------------

FASHION_META = {
    "input_shape": [1, 28, 28],
    "preprocessing": {"mean": [0.286], "std": [0.353]},
    "num_classes": 10,
}


def test_input_spec_takes_a_shipped_teachers_recorded_facts_for_named_files() -> None:
    from risloss.data import InputSpec

    spec = InputSpec.resolve((1, 28, 28), data="imagefolder:x", metadata=FASHION_META)
    assert (spec.image_size, spec.normalize) == (28, ((0.286,), (0.353,)))
    assert spec.normalization == ((0.286,), (0.353,))
    # Options given win; data built by code (or passed as an object) is loaded as it comes.
    given = InputSpec.resolve(
        (1, 28, 28), data="imagefolder:x", image_size=32, normalize=None, metadata=FASHION_META
    )
    assert (given.image_size, given.normalize, given.normalization) == (32, None, None)
    for data in ("pkg.mod:make", None):
        spec = InputSpec.resolve((1, 28, 28), data=data, metadata=FASHION_META)
        assert (spec.image_size, spec.normalize) == ("default", "default"), data
        assert spec.normalization == ((0.286,), (0.353,)), data  # recorded by the teacher
    # Without metadata: the named data set's own default, unknown for data from code.
    plain = InputSpec.resolve((3, 8, 8), data="imagefolder:x")
    assert (plain.image_size, plain.normalize) == ("default", "default")
    assert plain.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert InputSpec.resolve((3, 8, 8), data="pkg.mod:make").normalization == "unknown"
    assert InputSpec.resolve((3, 8, 8), data=None).normalization == "unknown"


def test_input_spec_input_range_is_the_pixel_range_under_the_normalization() -> None:
    from risloss.data import InputSpec

    mean, std = 0.286, 0.353
    auto = InputSpec.resolve((1, 28, 28), data="fashion-mnist", input_range="auto")
    assert auto.input_range == (((0.0 - mean) / std,), ((1.0 - mean) / std,))
    assert auto.input_range == auto.pixel_range
    pixels = InputSpec.resolve((3, 8, 8), data=None, normalize=None, input_range="auto")
    assert pixels.input_range == ((0.0,) * 3, (1.0,) * 3)
    stats = ((0.5,), (0.25,))
    one = InputSpec.resolve((1, 8, 8), data="fashion-mnist", normalize=stats, input_range="auto")
    assert one.input_range == ((-2.0,), (2.0,))
    unknown = InputSpec.resolve((1, 8, 8), data="pkg.mod:make", input_range="auto")
    assert unknown.input_range is None and unknown.pixel_range is None
    assert InputSpec.resolve((1, 8, 8), data="fashion-mnist").input_range is None  # "none"
    bounds = InputSpec.resolve((3, 8, 8), data=None, input_range=((0.0,), (1.0,)))
    assert bounds.input_range == ((0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match=r"^input_range must have 1 or 3 values per bound"):
        InputSpec.resolve((3, 8, 8), data=None, input_range=((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match=r"^normalize: 2 mean and std values"):
        InputSpec.resolve((3, 8, 8), data=None, normalize=((0.1, 0.2), (1.0, 1.0)))


def test_input_spec_is_frozen_and_json_ready() -> None:
    import json

    import attrs

    from risloss.data import InputSpec

    spec = InputSpec.resolve((3, 8, 8), data=None, normalize=((0.5,), (0.25,)))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.channels = 1  # type: ignore[misc]
    saved = json.loads(json.dumps(spec.to_dict()))
    assert saved["normalization"] == [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    assert (saved["channels"], saved["height"], saved["width"]) == (3, 8, 8)


def test_load_for_model_checks_and_describes_a_data_set_object() -> None:
    from torch.utils.data import Subset

    from risloss.data import load_for_model

    data = _images(6, (3, 16, 16))
    test, spec = load_for_model(_FixedSize(), data, normalize=None, limit=4)
    assert isinstance(test, Subset) and len(test) == 4 and test.dataset is data  # used as it is
    assert spec.shape == (3, 16, 16) and spec.normalization is None
    with pytest.raises(ValueError, match="3-channel images"):
        load_for_model(_FixedSize(), _images(3, (1, 16, 16)))
    with pytest.raises(TypeError, match="data must be a data set name or a torch Dataset"):
        load_for_model(_FixedSize(), 42)  # type: ignore[arg-type]


def test_load_for_model_reads_a_named_set_as_the_teacher_was_trained() -> None:
    """A shipped teacher's recorded options reproduce the data set's own defaults bit for bit."""
    from risloss.data import load_for_model
    from risloss.models import load_pretrained, pretrained_info

    default = fashion_mnist_or_skip("test")
    meta = pretrained_info("resnet8_fashion_mnist")
    teacher = load_pretrained("resnet8_fashion_mnist")
    test, spec = load_for_model(teacher, "fashion-mnist", metadata=meta)
    assert torch.equal(test.images, default.images)  # type: ignore[attr-defined]
    assert spec.image_size == 28 and spec.normalization == ((0.286,), (0.353,))
    train = spec.load("fashion-mnist", "train")
    assert train[0][0].shape == (1, 28, 28)
    assert spec.load(test, "train") is test  # an object is used as it is


def test_data_from_code_leaves_the_import_path_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    module = _factory_module(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert len(load_dataset(f"{module}:make", "test")) == 4
    with pytest.raises(ValueError, match="cannot import module"):
        load_dataset("no_such_module_anywhere:make", "test")
    assert sys.path == before


def test_cifar10_from_image_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from risloss.data import CIFAR10_CLASSES, TensorImageDataset
    from tests._data import write_cifar_files

    write_cifar_files(tmp_path / "c10", per_class=3)
    test = load_dataset("cifar10", "test", root=tmp_path / "c10")
    assert isinstance(test, TensorImageDataset)
    assert test.images.shape == (30, 3, 32, 32) and test.classes == list(CIFAR10_CLASSES)
    assert test.labels.tolist() == [c for c in range(10) for _ in range(3)]
    # the training split's statistics by default (those of the shipped CIFAR-10 teacher)
    assert test.mean == (0.4914, 0.4822, 0.4465) and test.std == (0.247, 0.2435, 0.2616)
    pixels = load_dataset("cifar10", "test", root=tmp_path / "c10", normalize=None)
    assert float(pixels.images.min()) >= 0.0 and float(pixels.images.max()) <= 1.0
    assert torch.allclose(test.denormalize(test.images), pixels.images, atol=1e-5)
    small = load_dataset("cifar10", "train", root=tmp_path / "c10", image_size=16)
    assert small.images.shape == (30, 3, 16, 16)
    monkeypatch.setenv("RISLOSS_CIFAR10", str(tmp_path / "c10"))
    assert torch.equal(load_dataset("cifar10", "test").images, test.images)


def test_cifar10_image_files_that_do_not_fit_are_one_line_errors(tmp_path: Path) -> None:
    from tests._data import write_cifar_files

    write_cifar_files(tmp_path / "c10", per_class=1)
    (tmp_path / "c10" / "test" / "zebra").mkdir()
    with pytest.raises(DataFileError, match=r"one sub-folder per class, named airplane, .*zebra"):
        load_dataset("cifar10", "test", root=tmp_path / "c10")
    (tmp_path / "c10" / "test" / "zebra").rmdir()
    (tmp_path / "c10" / "test" / "cat" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(DataFileError, match=r"cannot read image .*0000\.png") as err:
        load_dataset("cifar10", "test", root=tmp_path / "c10")
    assert "\n" not in str(err.value)
    from PIL import Image

    Image.new("RGB", (28, 28)).save(tmp_path / "c10" / "test" / "cat" / "0000.png")
    with pytest.raises(DataFileError, match=r"is 32x32, found \(28, 28\)"):
        load_dataset("cifar10", "test", root=tmp_path / "c10")
