"""BNStatisticsLoss on statistics captured from real BatchNorm layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from torch import nn

from risloss.functional import BNStatistics, batch_moments, bn_statistics_loss
from risloss.losses import BNStatisticsLoss
from tests.strategies import bn_statistics


def _capture(model: nn.Module, x: torch.Tensor) -> BNStatistics:
    """Run ``model`` on ``x`` and collect the input moments of every BatchNorm layer."""
    names, means, variances, running_means, running_vars = [], [], [], [], []
    handles = []

    def hook(name: str, bn: nn.BatchNorm2d):
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            mean, var = batch_moments(args[0])
            assert bn.running_mean is not None and bn.running_var is not None
            names.append(name)
            means.append(mean)
            variances.append(var)
            running_means.append(bn.running_mean)
            running_vars.append(bn.running_var)

        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(hook(name, module)))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return BNStatistics(names, means, variances, running_means, running_vars)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)
    ).eval()


@given(stats=bn_statistics())
def test_forward_equals_function(stats: BNStatistics) -> None:
    for reduction in ("mean", "sum", "none"):
        for channel_reduction in ("sum", "mean"):
            loss = BNStatisticsLoss(reduction=reduction, channel_reduction=channel_reduction)
            expected = bn_statistics_loss(
                stats.batch_means,
                stats.batch_vars,
                stats.running_means,
                stats.running_vars,
                reduction=reduction,
                channel_reduction=channel_reduction,
            )
            torch.testing.assert_close(loss(stats), expected, rtol=0, atol=0)


def test_zero_when_running_statistics_are_the_batch_statistics() -> None:
    # train mode normalizes with batch statistics, so setting the running statistics leaves
    # every layer's input unchanged; momentum 0 keeps the forward pass from updating them
    model = _model().train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.0
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    stats = _capture(model, x)
    assert stats.names == ("1", "4")
    assert BNStatisticsLoss()(stats).item() > 0
    with torch.no_grad():
        for name, mean, var in zip(stats.names, stats.batch_means, stats.batch_vars, strict=True):
            bn = model.get_submodule(name)
            assert isinstance(bn, nn.BatchNorm2d)
            bn.running_mean.copy_(mean)  # type: ignore[union-attr]
            bn.running_var.copy_(var)  # type: ignore[union-attr]
    assert BNStatisticsLoss()(_capture(model, x)).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_reaches_the_input_and_not_the_running_statistics() -> None:
    model = _model()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    loss = BNStatisticsLoss()(_capture(model, x))
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key


def test_rejects_anything_but_bn_statistics() -> None:
    t = [torch.zeros(2)]
    with pytest.raises(TypeError, match="stats must be a BNStatistics, got tuple"):
        BNStatisticsLoss()((t, t, t, t))
