from __future__ import annotations

from importlib import resources

import pytest
import torch

from risloss import evaluate
from risloss.models import DEFAULT_TEACHER, list_pretrained, load_pretrained, pretrained_info
from tests._data import fashion_mnist_or_skip


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
