"""bn_statistics_loss, batch_moments and BNStatistics against plain references."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.functional import BNStatistics, ChannelReduction, batch_moments, bn_statistics_loss
from tests.strategies import bn_statistics, tensors


def _fields(stats: BNStatistics) -> tuple[tuple[torch.Tensor, ...], ...]:
    return stats.batch_means, stats.batch_vars, stats.running_means, stats.running_vars


def reference(stats: BNStatistics, channel_reduction: ChannelReduction) -> list[float]:
    """Per-layer loss, one channel at a time."""
    values = []
    for mu, var, rm, rv in zip(*_fields(stats), strict=True):
        mean_terms = [(a - b) ** 2 for a, b in zip(mu.tolist(), rm.tolist(), strict=True)]
        var_terms = [(a - b) ** 2 for a, b in zip(var.tolist(), rv.tolist(), strict=True)]
        if channel_reduction == "sum":
            values.append(sum(mean_terms) + sum(var_terms))
        else:
            values.append(sum(mean_terms) / len(mean_terms) + sum(var_terms) / len(var_terms))
    return values


@pytest.mark.parametrize("channel_reduction", ["sum", "mean"])
@given(stats=bn_statistics())
def test_matches_reference(channel_reduction: ChannelReduction, stats: BNStatistics) -> None:
    expected = torch.tensor(reference(stats, channel_reduction), dtype=torch.float64)
    kwargs = {"channel_reduction": channel_reduction}
    got = bn_statistics_loss(*_fields(stats), reduction="none", **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected)
    mean = bn_statistics_loss(*_fields(stats), **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(mean, expected.mean())
    total = bn_statistics_loss(*_fields(stats), reduction="sum", **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(total, expected.sum())


@given(stats=bn_statistics())
def test_zero_when_batch_statistics_equal_running_statistics(stats: BNStatistics) -> None:
    value = bn_statistics_loss(
        stats.running_means, stats.running_vars, stats.running_means, stats.running_vars
    )
    assert value.item() == 0.0


def test_mixed_dtypes_and_channel_counts() -> None:
    means = [torch.ones(3, dtype=torch.float64), torch.ones(5)]
    variances = [torch.ones(3, dtype=torch.float64), torch.full((5,), 2.0)]
    running = [torch.zeros(3), torch.zeros(5)]
    running_v = [torch.ones(3), torch.ones(5)]
    got = bn_statistics_loss(means, variances, running, running_v, reduction="none")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor([3.0, 10.0], dtype=torch.float64))


@given(data=st.data(), n=st.integers(2, 4), c=st.integers(1, 3), spatial=st.integers(1, 3))
def test_batch_moments_match_a_channel_loop(
    data: st.DataObject, n: int, c: int, spatial: int
) -> None:
    x = data.draw(tensors((n, c, spatial, spatial)))
    mean, var = batch_moments(x)
    assert mean.shape == var.shape == (c,)
    for channel in range(c):
        values = x[:, channel].flatten().tolist()
        mu = sum(values) / len(values)
        assert mean[channel].item() == pytest.approx(mu, abs=1e-9)
        biased = sum((v - mu) ** 2 for v in values) / len(values)
        assert var[channel].item() == pytest.approx(biased, abs=1e-9)


@pytest.mark.parametrize(
    ("bn", "shape"),
    [
        (torch.nn.BatchNorm1d(3), (6, 3)),
        (torch.nn.BatchNorm1d(3), (4, 3, 5)),
        (torch.nn.BatchNorm2d(3), (4, 3, 2, 2)),
        (torch.nn.BatchNorm3d(2), (2, 2, 2, 2, 3)),
    ],
)
def test_batch_moments_agree_with_batchnorm(
    bn: torch.nn.modules.batchnorm._BatchNorm, shape: tuple[int, ...]
) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bn = bn.double().train()
    bn.momentum = 1.0  # running statistics become this batch's: mean, and *unbiased* variance
    out = bn(x)
    mean, var = batch_moments(x)
    count = x.numel() // x.shape[1]
    torch.testing.assert_close(mean, bn.running_mean)
    torch.testing.assert_close(var * count / (count - 1), bn.running_var)
    # BatchNorm normalizes with the biased variance
    view = (1, -1) + (1,) * (x.dim() - 2)
    normalized = (x - mean.view(view)) / torch.sqrt(var.view(view) + bn.eps)
    torch.testing.assert_close(out, normalized)


def test_batch_moments_are_differentiable_and_leave_input_alone() -> None:
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    assert torch.autograd.gradcheck(lambda t: batch_moments(t), (x,))
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.zeros(3), ValueError, r"\(N, C, \.\.\.\)"),
        (torch.zeros(0, 3), ValueError, "at least one element"),
        (torch.zeros(2, 3, dtype=torch.long), ValueError, "floating-point"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_batch_moments_rejects_bad_inputs(x: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        batch_moments(x)  # type: ignore[arg-type]


def test_length_mismatch_lists_every_length() -> None:
    one = [torch.zeros(2)]
    with pytest.raises(ValueError, match="same length") as info:
        bn_statistics_loss(one, one, one, one * 2)
    assert "'running_vars': 2" in str(info.value)


def test_empty_sequences_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one BatchNorm layer"):
        bn_statistics_loss([], [], [], [])


def test_shape_mismatch_names_the_layer_and_shapes() -> None:
    ok, bad = [torch.zeros(2), torch.zeros(3)], [torch.zeros(2), torch.zeros(4)]
    with pytest.raises(ValueError, match=r"layer 1: .*'running_means': \(4,\)"):
        bn_statistics_loss(ok, ok, bad, ok)


def test_integer_statistics_are_rejected() -> None:
    ints = [torch.zeros(2, dtype=torch.long)]
    floats = [torch.zeros(2)]
    with pytest.raises(ValueError, match=r"running_vars\[0\] must be a floating-point tensor"):
        bn_statistics_loss(floats, floats, floats, ints)


class TestBNStatistics:
    def test_sequences_become_tuples(self) -> None:
        t = torch.zeros(2)
        stats = BNStatistics(
            names=["a"], batch_means=[t], batch_vars=[t], running_means=[t], running_vars=[t]
        )
        assert stats.names == ("a",)
        assert isinstance(stats.batch_means, tuple)
        assert len(stats) == 1

    def test_frozen(self) -> None:
        t = (torch.zeros(2),)
        stats = BNStatistics(("a",), t, t, t, t)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.names = ("b",)  # type: ignore[misc]

    def test_compares_by_identity(self) -> None:
        t = (torch.zeros(2),)
        one, two = BNStatistics(("a",), t, t, t, t), BNStatistics(("a",), t, t, t, t)
        assert one == one and one != two

    def test_lengths_must_agree(self) -> None:
        t = (torch.zeros(2),)
        with pytest.raises(ValueError, match="same length"):
            BNStatistics(("a", "b"), t, t, t, t)

    def test_names_must_be_unique(self) -> None:
        t = (torch.zeros(2), torch.zeros(2))
        with pytest.raises(ValueError, match=r"unique, got duplicates \['a'\]"):
            BNStatistics(("a", "a"), t, t, t, t)

    def test_entries_must_be_tensors(self) -> None:
        t = (torch.zeros(2),)
        with pytest.raises(TypeError, match=r"batch_vars\[0\] must be a torch\.Tensor"):
            BNStatistics(("a",), t, ([0.0],), t, t)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"names\[0\] must be a str"):
            BNStatistics((1,), t, t, t, t)  # type: ignore[arg-type]
