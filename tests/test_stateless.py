from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from risloss._stateless import ModuleState, module_state_snapshot, stateless_call

TINY = nn.Sequential(
    nn.Conv2d(2, 3, 3, padding=1),
    nn.BatchNorm2d(3),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(3, 4),
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_without_overrides_equals_the_module_call() -> None:
    model = TINY.eval()
    x = torch.randn(2, 2, 5, 5, generator=seeded(0))
    assert torch.equal(stateless_call(model, None, (x,)), model(x))
    assert torch.equal(stateless_call(model, {}, x), model(x))  # a lone tensor is one argument


def test_partial_override_is_used_and_the_rest_kept() -> None:
    model = nn.Linear(3, 2)
    weight = torch.randn(2, 3, generator=seeded(1))
    x = torch.randn(4, 3, generator=seeded(2))
    out = stateless_call(model, {"weight": weight}, (x,))
    torch.testing.assert_close(out, x @ weight.T + model.bias)


def test_buffer_override_is_used() -> None:
    bn = nn.BatchNorm1d(2).eval()
    x = torch.randn(5, 2, generator=seeded(0))
    buffers = {"running_mean": torch.tensor([1.0, -1.0]), "running_var": torch.tensor([4.0, 1.0])}
    out = stateless_call(bn, None, (x,), buffers=buffers)
    expected = (x - buffers["running_mean"]) / torch.sqrt(buffers["running_var"] + bn.eps)
    torch.testing.assert_close(out, expected)
    assert torch.equal(bn.running_mean, torch.zeros(2))


def test_gradients_reach_the_override() -> None:
    model = nn.Linear(3, 1, bias=False).requires_grad_(False)
    weight = torch.ones(1, 3, requires_grad=True)
    stateless_call(model, {"weight": weight}, (torch.tensor([[1.0, 2.0, 3.0]]),)).sum().backward()
    assert weight.grad is not None and torch.equal(weight.grad, torch.tensor([[1.0, 2.0, 3.0]]))
    assert model.weight.grad is None


def test_unknown_names_raise_and_list_the_valid_ones() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"\['0\.weigth'\].*0\.weight, 0\.bias, 1\.weight"):
        stateless_call(model, {"0.weigth": torch.zeros(2, 2)}, (x,))
    with pytest.raises(ValueError, match=r"not parameters"):
        stateless_call(model, {"1.running_mean": torch.zeros(2)}, (x,))
    with pytest.raises(ValueError, match=r"not buffers.*1\.running_mean"):
        stateless_call(model, None, (x,), buffers={"1.weight": torch.zeros(2)})


@given(seed=st.integers(0, 2**16), scale=st.floats(0.0, 2.0))
def test_model_state_unchanged_after_eval_calls(seed: int, scale: float) -> None:
    model = TINY.eval()
    before = module_state_snapshot(model)
    params = {
        n: p + scale * torch.randn(p.shape, generator=seeded(seed))
        for n, p in model.named_parameters()
    }
    buffers = {"1.running_mean": torch.randn(3, generator=seeded(seed + 1))}
    x = torch.randn(2, 2, 4, 4, generator=seeded(seed + 2))
    stateless_call(model, params, (x,), buffers=buffers)
    assert module_state_snapshot(model).differences(before) == []


def test_train_mode_updates_the_buffers_it_is_given() -> None:
    # Documented pitfall: in train mode BatchNorm updates the running statistics in place,
    # the model's own when none are passed; teachers are therefore called in eval mode.
    bn = nn.BatchNorm1d(2).train()
    x = torch.randn(8, 2, generator=seeded(0)) + 3.0
    mine = {"running_mean": torch.zeros(2), "running_var": torch.ones(2)}
    stateless_call(bn, None, (x,), buffers=mine)
    assert not torch.equal(mine["running_mean"], torch.zeros(2))
    assert torch.equal(bn.running_mean, torch.zeros(2))
    stateless_call(bn, None, (x,))
    assert not torch.equal(bn.running_mean, torch.zeros(2))


def test_snapshot_is_a_copy_and_differences_are_reported() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    snap = module_state_snapshot(model)
    assert isinstance(snap, ModuleState)
    assert snap.parameters["0.weight"] is not model[0].weight
    assert snap.differences(module_state_snapshot(model)) == []
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].eval()
    assert module_state_snapshot(model).differences(snap) == [
        "parameter 0.weight changed",
        "training flag of module '1': False != True",
    ]


def test_differences_treats_nan_as_equal_and_reports_missing() -> None:
    a = ModuleState({"w": torch.tensor([float("nan"), 1.0])}, {}, {"": True})
    b = ModuleState({"w": torch.tensor([float("nan"), 1.0])}, {"b": torch.zeros(1)}, {"": True})
    assert a.differences(b) == ["buffer b only in the second snapshot"]
    c = ModuleState({"w": torch.tensor([float("nan"), 2.0])}, {}, {"": True})
    assert a.differences(c) == ["parameter w changed"]
    d = ModuleState({"w": torch.tensor([float("nan"), 1.0], dtype=torch.float64)}, {}, {"": True})
    assert a.differences(d) == ["parameter w changed"]
