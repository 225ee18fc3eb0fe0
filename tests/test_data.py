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
