from __future__ import annotations

from importlib import resources

import pytest
import torch

from risloss import evaluate
from risloss.models import DEFAULT_TEACHER, list_pretrained, load_pretrained, pretrained_info
from tests._data import cifar10_or_skip, fashion_mnist_or_skip


def test_list_pretrained_describes_each() -> None:
    shipped = list_pretrained()
    assert DEFAULT_TEACHER in shipped and "resnet8_fashion_mnist" in shipped
    for meta in shipped.values():
        for key in (
            "arch",
            "dataset",
            "input_shape",
            "preprocessing",
            "test_top1",
            "training_command",
        ):
            assert key in meta, key
        assert meta["training_command"].startswith("risloss train-teacher")


def test_weights_are_small_and_load_without_pickle() -> None:
    folder = resources.files("risloss.models") / "weights"
    files = [p for p in folder.iterdir() if p.name.endswith(".pt")]
    assert files
    for f in files:
        with resources.as_file(f) as path:
            assert path.stat().st_size < 5 * 1024 * 1024
            state = torch.load(path, weights_only=True)
            assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_unknown_name_lists_shipped() -> None:
    with pytest.raises(ValueError, match="resnet20_fashion_mnist"):
        load_pretrained("nope")


@pytest.mark.parametrize("name", ["resnet8_fashion_mnist", DEFAULT_TEACHER])
def test_shipped_accuracy_is_reproduced(name: str) -> None:
    test = fashion_mnist_or_skip("test")
    model = load_pretrained(name)
    recorded = pretrained_info(name)["test_top1"]
    assert abs(evaluate(model, test) - recorded) <= 0.05
    if name == DEFAULT_TEACHER:
        assert recorded >= 93.0


def test_the_cifar10_teacher_records_its_data_and_training() -> None:
    meta = pretrained_info("resnet20_cifar10")
    assert meta["dataset"] == "cifar10" and meta["input_shape"] == [3, 32, 32]
    assert meta["preprocessing"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert meta["test_top1"] >= 85.0 and meta["test_images"] == 10000
    assert meta["train_images"] == 50000 and meta["train_seconds"] > 0
    assert len(meta["history"]) == meta["epochs"]
    assert "--dataset cifar10" in meta["training_command"]
    model = load_pretrained("resnet20_cifar10")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_cifar10_teacher_accuracy_is_reproduced() -> None:
    test = cifar10_or_skip("test")  # CIFAR-10 is not in CI: where it is, the figure holds
    recorded = pretrained_info("resnet20_cifar10")["test_top1"]
    assert abs(evaluate(load_pretrained("resnet20_cifar10"), test) - recorded) <= 0.05
