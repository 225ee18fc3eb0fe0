"""Evaluation sets are checked before training: labels, image sizes, readable images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from risloss._datacheck import check_dataset, sample_indices
from risloss.data import TensorImageDataset, _Transformed, load_dataset


def tensors(labels: Sequence[float] | torch.Tensor, n: int | None = None) -> TensorDataset:
    labels = torch.as_tensor(labels)
    return TensorDataset(torch.rand(len(labels) if n is None else n, 1, 4, 4), labels)


class Items(Dataset[Any]):
    """A data set from code: items made one by one, no label list to read at once."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        item = self.items[i]
        if isinstance(item, Exception):
            raise item
        return item


def image(*shape: int) -> torch.Tensor:
    return torch.rand(*shape)


def test_sample_indices_spread_over_the_set() -> None:
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_indices(4, 10) == [0, 1, 2, 3]
    assert sample_indices(0, 3) == []
    for n in range(1, 40):
        for k in range(1, 12):
            got = sample_indices(n, k)
            assert got[0] == 0 and len(got) == min(n, k) and got == sorted(set(got))
            assert k == 1 or got[-1] == n - 1


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 1, 2] * 10, None),
        ([0.0, 1.0, 2.0], None),  # whole numbers held as floats are class indices
        ([0, 1, 2] * 10 + [50], "item 30 has label 50, outside 0..2 (the model has 3 outputs)"),
        ([0, -1, 2], "item 1 has label -1, outside 0..2"),
        ([0.0, 1.0, 3.7], "item 2 has label 3.7, not a whole number"),
        ([0.0, float("nan")], "item 1 has label nan, not a whole number"),
        ([True, False], "item 0 has labels of type torch.bool, not class indices"),
    ],
)
def test_every_label_is_checked_at_once(labels: list[Any], expected: str | None) -> None:
    found = check_dataset(tensors(labels), num_classes=3, sample=1)  # only item 0 is read
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.startswith(f"the evaluation data: {expected}")
        assert "\n" not in found


def test_labels_through_subsets_and_wrappers() -> None:
    data = tensors([0, 1, 9, 1, 0, 1])
    assert check_dataset(Subset(data, [0, 1, 3, 4]), num_classes=2) is None  # 9 is left out
    found = check_dataset(Subset(Subset(data, [5, 4, 3, 2]), [1, 3]), num_classes=2)
    assert found is not None and found.startswith("the evaluation data: item 1 has label 9,")

    # The resizing wrapper of load_dataset keeps the labels: all are read at once.
    big = tensors([0] * 5000 + [7] + [0] * 4999)
    found = check_dataset(_Transformed(big, 8, None), 3, sample=4, what="the test split")
    assert found is not None and found.startswith("the test split: item 5000 has label 7,")

    class Relabel(Dataset[Any]):  # a wrapper of the user's, which may change the labels
        def __init__(self, dataset: Any) -> None:
            self.dataset = dataset

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, i: int) -> Any:
            x, y = self.dataset[i]
            return x, y % 3

    assert check_dataset(Relabel(big), num_classes=3, sample=4) is None  # items decide
    found = check_dataset(Relabel(tensors([0, 1, 2.5])), num_classes=3)
    assert found is not None and "item 2 has label 2.5, not a whole number" in found


def test_label_lists_and_tensor_image_sets() -> None:
    data = TensorImageDataset(
        torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 3, 4]), classes="abcde", mean=[0], std=[1]
    )
    assert check_dataset(data, num_classes=5) is None
    found = check_dataset(data, num_classes=4)
    assert found is not None and "item 4 has label 4, outside 0..3" in found
    data.images[3, 0, 1, 1] = float("inf")
    assert check_dataset(data, num_classes=5, sample=1) == (
        "the evaluation data: the image of item 3 holds NaN or infinite values"
    )

    class Targets(Items):
        targets: ClassVar[list[int]] = [0, 1, 1, 5]

    items = Targets([(image(1, 4, 4), t) for t in (0, 1, 1, 5)])
    found = check_dataset(items, num_classes=2, sample=1)
    assert found is not None and "item 3 has label 5, outside 0..1" in found


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([(image(1, 4, 4), 0), (image(1, 4, 4), torch.tensor(1))], None),
        (
            [(image(1, 4, 4), 0), (image(1, 5, 4), 1)],
            "images differ in size: item 0 is (1, 4, 4), item 1 is (1, 5, 4); give them one "
            "size, or resize them with --image-size N (image_size=)",
        ),
        ([(image(1, 4, 4), 0), (image(1, 4, 4), 2.5)], "item 1 has label 2.5, not a whole"),
        ([(image(1, 4, 4), 0), (image(1, 4, 4), "cat")], "item 1 has label 'cat' (str), not a"),
        ([(image(1, 4, 4), 0), (image(1, 4, 4), 9)], "item 1 has label 9, outside 0..2"),
        ([(image(1, 4, 4), 0), image(1, 4, 4)], "item 1 is a Tensor, not an (image, label) pair"),
        (
            [(image(1, 4, 4), 0), RuntimeError("disk\nerror")],
            "item 1 cannot be read (RuntimeError: disk error)",
        ),
        (
            [(torch.zeros(1, 4, 4, dtype=torch.uint8), 0)],
            "the image of item 0 is a torch.uint8 tensor of shape (1, 4, 4), not a (C, H, W) "
            "float tensor",
        ),
        (
            [(image(1, 4, 4), 0), (torch.full((1, 4, 4), float("nan")), 0)],
            "the image of item 1 holds NaN or infinite values",
        ),
    ],
)
def test_a_sample_of_items_is_read(items: list[Any], expected: str | None) -> None:
    found = check_dataset(Items(items), num_classes=3)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.startswith(f"the evaluation data: {expected}"), found


def test_the_sample_reaches_the_last_item() -> None:
    items = [(image(1, 4, 4), 0)] * 999 + [(image(1, 4, 4), 3)]
    found = check_dataset(Items(items), num_classes=3, sample=5)
    assert found is not None and "item 999 has label 3" in found


def _folder(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color=(10, 200, 30)).save(path)
    return root


def test_an_image_folder_is_checked_by_its_headers(tmp_path: Path) -> None:
    root = _folder(tmp_path / "set", {"a/0.png": (8, 8), "a/1.png": (8, 8), "b/2.png": (8, 8)})
    spec = f"imagefolder:{root}"
    data = load_dataset(spec, "test", image_size=None)
    assert check_dataset(data, num_classes=2) is None
    found = check_dataset(data, num_classes=1)
    assert found is not None and "item 2 has label 1, outside 0..0" in found
    # A file that is not an image, beyond the items the sample reads.
    for i in range(3, 40):
        _folder(root, {f"a/{i:02d}.png": (8, 8)})
    (root / "a" / "17.png").write_text("not an image")
    data = load_dataset(spec, "test", image_size=None)
    found = check_dataset(data, num_classes=2, sample=2)
    assert found is not None
    assert found.startswith(f"the evaluation data: image {root / 'a' / '17.png'} (item ")
    assert "cannot be read (cannot identify image file" in found
    # Only the items a Subset selects are checked.
    samples = data.samples  # type: ignore[attr-defined]
    keep = [i for i, (path, _) in enumerate(samples) if not path.endswith("17.png")]
    assert check_dataset(Subset(data, keep), num_classes=2, sample=2) is None


def test_an_image_folder_of_mixed_sizes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "set", {"a/0.png": (8, 8), "a/1.png": (8, 8), "b/2.png": (12, 8)})
    found = check_dataset(load_dataset(f"imagefolder:{root}", "test", image_size=None), 2)
    assert found == (
        f"the evaluation data: images differ in size: item 0 ({root / 'a' / '0.png'}) is "
        f"(3, 8, 8), item 2 ({root / 'b' / '2.png'}) is (3, 8, 12); give them one size, or "
        "resize them with --image-size N (image_size=)"
    )
    # Resized to one size, the files' sizes do not matter.
    assert check_dataset(load_dataset(f"imagefolder:{root}", "test", image_size=8), 2) is None


def test_an_oversized_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "set", {"a/0.png": (4, 4), "b/1.png": (16, 16)})
    data = load_dataset(f"imagefolder:{root}", "test", image_size=4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 256 pixels > twice the limit
    found = check_dataset(data, num_classes=2, sample=1)
    assert found is not None and found.startswith(
        f"the evaluation data: image {root / 'b' / '1.png'} (item 1) cannot be read (Image size"
    )


def test_bad_arguments_and_empty_sets() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        check_dataset(tensors([0]), num_classes=0)
    with pytest.raises(ValueError, match="sample must be an integer >= 1, got True"):
        check_dataset(tensors([0]), num_classes=2, sample=True)
    assert check_dataset(Items([]), 2) == "the evaluation data: it holds no (image, label) pairs"
