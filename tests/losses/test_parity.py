"""Every loss module equals its function, holds read-only configuration and no state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from risloss.losses import (
    BNStatisticsLoss,
    FeatureInconsistency,
    LabelCorrelationPenalty,
    PredictionDivergence,
)
from tests.functional._cases import CASES, REDUCTIONS, Case

cases = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


@cases
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_equals_function(case: Case, reduction: str) -> None:
    inputs = tuple(t.requires_grad_() for t in case.make(torch.float64))
    from_function = case.call(inputs, reduction)
    grads_function = torch.autograd.grad(from_function.sum(), inputs)
    from_module = case.call_module(case.module(reduction), inputs)
    grads_module = torch.autograd.grad(from_module.sum(), inputs)
    torch.testing.assert_close(from_module, from_function, rtol=0, atol=0)
    for g_module, g_function in zip(grads_module, grads_function, strict=True):
        torch.testing.assert_close(g_module, g_function, rtol=0, atol=0)


@cases
def test_module_has_no_state(case: Case) -> None:
    module = case.module("mean")
    assert list(module.parameters()) == []
    assert module.state_dict() == {}


@pytest.mark.parametrize(
    ("module", "config"),
    [
        (
            PredictionDivergence(kind="js", temperature=3, reduction="none"),
            {"kind": "js", "temperature": 3.0, "reduction": "none"},
        ),
        (FeatureInconsistency(kind="nmse", reduction="sum"), {"kind": "nmse", "reduction": "sum"}),
        (
            LabelCorrelationPenalty(pairs="same", kind="square", temperature=0.5),
            {"pairs": "same", "kind": "square", "temperature": 0.5, "reduction": "mean"},
        ),
        (
            BNStatisticsLoss(reduction="sum", channel_reduction="mean"),
            {"reduction": "sum", "channel_reduction": "mean"},
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "",
)
def test_configuration_is_exposed_read_only_and_in_repr(
    module: nn.Module, config: dict[str, object]
) -> None:
    for name, value in config.items():
        assert getattr(module, name) == value
        assert type(getattr(module, name)) is type(value)
        assert f"{name}={value!r}" in repr(module)
        with pytest.raises(AttributeError):
            setattr(module, name, value)


def test_temperature_is_stored_as_float() -> None:
    assert isinstance(PredictionDivergence(temperature=2).temperature, float)
    assert isinstance(LabelCorrelationPenalty(temperature=1).temperature, float)


def test_modules_survive_device_and_dtype_moves() -> None:
    loss = PredictionDivergence(kind="kl").double()
    x = torch.randn(2, 3, dtype=torch.float64)
    assert loss(x, x.flip(0)).dtype == torch.float64
