"""label_correlation_penalty and prediction_correlation against plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.functional import (
    CORRELATION_KINDS,
    PAIR_SELECTIONS,
    CorrelationKind,
    PairSelection,
    label_correlation_penalty,
    prediction_correlation,
)
from tests.strategies import class_labels, logits, temperatures

EPS = 1e-6
PENALTIES = {
    "relu": lambda r: max(r, 0.0),
    "raw": lambda r: r,
    "abs": abs,
    "square": lambda r: r * r,
}


def _pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation with the same eps guard on each centred vector's norm."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cx, cy = [v - mx for v in x], [v - my for v in y]
    nx = max(math.sqrt(sum(v * v for v in cx)), EPS)
    ny = max(math.sqrt(sum(v * v for v in cy)), EPS)
    return sum(a * b for a, b in zip(cx, cy, strict=True)) / (nx * ny)


def _selected(i: int, j: int, pairs: PairSelection, labels: list[int] | None) -> bool:
    if i == j:
        return False
    if pairs == "all":
        return True
    assert labels is not None
    return (labels[i] == labels[j]) == (pairs == "same")


def reference(
    logits_: torch.Tensor,
    labels: torch.Tensor | None,
    pairs: PairSelection,
    kind: CorrelationKind,
    t: float,
) -> tuple[list[float], float, float]:
    """(per-sample values, mean over pairs, sum over unordered pairs), one pair at a time."""
    probs = torch.softmax(logits_ / t, dim=1).tolist()
    hard = None if labels is None else labels.tolist()
    batch = len(probs)
    phi = PENALTIES[kind]
    per_sample, values, unordered = [], [], 0.0
    for i in range(batch):
        row = []
        for j in range(batch):
            if _selected(i, j, pairs, hard):
                value = phi(_pearson(probs[i], probs[j]))
                row.append(value)
                values.append(value)
                if i < j:
                    unordered += value
        per_sample.append(sum(row) / len(row) if row else 0.0)
    mean = sum(values) / len(values) if values else 0.0
    return per_sample, mean, unordered


@pytest.mark.parametrize("pairs", PAIR_SELECTIONS)
@pytest.mark.parametrize("kind", CORRELATION_KINDS)
@given(data=st.data(), temperature=temperatures())
def test_matches_reference(
    pairs: PairSelection, kind: CorrelationKind, data: st.DataObject, temperature: float
) -> None:
    x = data.draw(logits(min_batch=2, max_batch=6))
    labels = data.draw(class_labels(x.shape[0], 3)) if pairs != "all" else None
    per_sample, mean, total = reference(x, labels, pairs, kind, temperature)
    kwargs = {"pairs": pairs, "kind": kind, "temperature": temperature}
    got = label_correlation_penalty(x, labels, reduction="none", **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(got, torch.tensor(per_sample, dtype=torch.float64))
    got_mean = label_correlation_penalty(x, labels, reduction="mean", **kwargs)  # type: ignore[arg-type]
    assert got_mean.item() == pytest.approx(mean, abs=1e-9)
    got_sum = label_correlation_penalty(x, labels, reduction="sum", **kwargs)  # type: ignore[arg-type]
    assert got_sum.item() == pytest.approx(total, abs=1e-9)


@given(x=logits(min_batch=2, max_batch=6, min_classes=2, max_classes=6))
def test_correlation_matches_numpy(x: torch.Tensor) -> None:
    probs = torch.softmax(x, dim=1)
    keep = (probs - probs.mean(dim=1, keepdim=True)).norm(dim=1) > 1e-3
    got = prediction_correlation(probs)[keep][:, keep]
    if int(keep.sum()) >= 2:
        expected = np.corrcoef(probs[keep].numpy())
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    assert bool((got.abs() <= 1 + 1e-9).all())
    torch.testing.assert_close(got, got.T)


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_identical_predictions_cost_more_than_distinct_ones(kind: CorrelationKind) -> None:
    alike = torch.tensor([[6.0, 1.0, 0.0, 0.0, -1.0]]).repeat(5, 1)
    distinct = 6.0 * torch.eye(5)
    high = label_correlation_penalty(alike, kind=kind)
    low = label_correlation_penalty(distinct, kind=kind)
    assert high.item() == pytest.approx(1.0, abs=1e-5)
    assert high > low
    # one-hot-like rows of distinct classes: R = -1 / (C - 1), all pairs alike
    expected = {"relu": 0.0, "raw": -0.25, "abs": 0.25, "square": 0.0625}[kind]
    assert low.item() == pytest.approx(expected, abs=1e-3)


@given(x=logits(min_batch=2, max_batch=6, scale=4.0))
def test_raw_penalty_over_all_pairs_is_bounded_below(x: torch.Tensor) -> None:
    # sum_{i != j} R_ij = ||sum_i z_i||^2 - sum_i ||z_i||^2 >= -B, so the mean is >= -1 / (B - 1)
    batch = x.shape[0]
    value = label_correlation_penalty(x, kind="raw")
    assert value.item() >= -1.0 / (batch - 1) - 1e-9


def test_constant_rows_are_uncorrelated_with_finite_gradient() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [3.0, 0.0, 0.0]], requires_grad=True)
    corr = prediction_correlation(torch.softmax(x, dim=1))
    assert corr[0].abs().max().item() < 1e-3
    assert corr[1, 2].item() == pytest.approx(1.0, abs=1e-6)
    value = label_correlation_penalty(x, reduction="none")
    torch.testing.assert_close(value, torch.tensor([0.0, 0.5, 0.5]), atol=1e-3, rtol=0)
    value.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("pairs", ["same", "different"])
@given(data=st.data())
def test_soft_labels_select_pairs_by_their_argmax(
    pairs: PairSelection, data: st.DataObject
) -> None:
    x = data.draw(logits(min_batch=2, max_batch=6, min_classes=3, max_classes=3))
    hard = data.draw(class_labels(x.shape[0], 3))
    soft = 0.7 * torch.nn.functional.one_hot(hard, 3).double() + 0.1
    torch.testing.assert_close(
        label_correlation_penalty(x, soft, pairs=pairs, reduction="none"),
        label_correlation_penalty(x, hard, pairs=pairs, reduction="none"),
    )


@given(x=logits(min_batch=2, max_batch=6))
def test_same_and_different_partition_all_pairs(x: torch.Tensor) -> None:
    labels = torch.arange(x.shape[0]) % 2
    total = label_correlation_penalty(x, reduction="sum", kind="raw")
    same = label_correlation_penalty(x, labels, pairs="same", reduction="sum", kind="raw")
    different = label_correlation_penalty(x, labels, pairs="different", reduction="sum", kind="raw")
    torch.testing.assert_close(same + different, total)


def test_no_selected_pair_gives_zero() -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4)
    for reduction in ("mean", "sum"):
        value = label_correlation_penalty(x, labels, pairs="same", reduction=reduction)
        assert value.item() == 0.0
    per_sample = label_correlation_penalty(x, labels, pairs="same", reduction="none")
    assert torch.equal(per_sample, torch.zeros(4))


def test_temperature_scales_logits() -> None:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(
        label_correlation_penalty(2.5 * x, temperature=2.5), label_correlation_penalty(x)
    )


@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (4,), (2, 3, 4)])
def test_rejects_bad_logit_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="at least 2 samples and 2 classes") as info:
        label_correlation_penalty(torch.zeros(shape))
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("pairs", ["same", "different"])
def test_labels_required_for_label_pairs(pairs: PairSelection) -> None:
    with pytest.raises(ValueError, match=f"pairs='{pairs}' needs labels"):
        label_correlation_penalty(torch.zeros(3, 4), pairs=pairs)


@pytest.mark.parametrize(
    "labels",
    [
        torch.zeros(4, dtype=torch.long),  # wrong batch size
        torch.zeros(3, 5),  # soft labels with a wrong class count
        torch.zeros(3, dtype=torch.bool),  # booleans are not classes
        torch.zeros(3),  # float hard labels are ambiguous
        torch.zeros(3, 4, 1),
    ],
)
def test_rejects_bad_labels(labels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="labels must"):
        label_correlation_penalty(torch.zeros(3, 4), labels, pairs="same")
