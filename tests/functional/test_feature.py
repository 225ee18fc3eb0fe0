"""feature_inconsistency against a plain reference, and its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.functional import FEATURE_KINDS, FeatureKind, feature_inconsistency
from tests.strategies import feature_pairs

EPS = 1e-8


def _unit(v: list[float]) -> list[float]:
    norm = max(math.sqrt(sum(x * x for x in v)), EPS)
    return [x / norm for x in v]


def reference(a: torch.Tensor, b: torch.Tensor, kind: FeatureKind) -> list[float]:
    """Per-sample distance, one sample and one feature at a time."""
    values = []
    rows_a = a.reshape(a.shape[0], -1).tolist()
    rows_b = b.reshape(b.shape[0], -1).tolist()
    for a_row, b_row in zip(rows_a, rows_b, strict=True):
        d = len(a_row)
        norm_a = math.sqrt(sum(x * x for x in a_row))
        norm_b = math.sqrt(sum(x * x for x in b_row))
        if kind == "cosine" and min(norm_a, norm_b) > EPS:
            dot = sum(x * y for x, y in zip(a_row, b_row, strict=True))
            values.append(1.0 - dot / (norm_a * norm_b))
        elif kind == "cosine":  # a zero vector: half the squared distance of the unit vectors
            pairs = zip(_unit(a_row), _unit(b_row), strict=True)
            values.append(0.5 * sum((x - y) ** 2 for x, y in pairs))
        elif kind == "mse":
            values.append(sum((x - y) ** 2 for x, y in zip(a_row, b_row, strict=True)) / d)
        elif kind == "l1":
            values.append(sum(abs(x - y) for x, y in zip(a_row, b_row, strict=True)) / d)
        else:
            pairs = zip(_unit(a_row), _unit(b_row), strict=True)
            values.append(sum((x - y) ** 2 for x, y in pairs) / d)
    return values


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@given(pair=feature_pairs())
def test_matches_reference(kind: FeatureKind, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    expected = torch.tensor(reference(a, b, kind), dtype=torch.float64)
    got = feature_inconsistency(a, b, kind=kind, reduction="none")
    assert got.shape == (a.shape[0],)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(feature_inconsistency(a, b, kind=kind), expected.mean())
    torch.testing.assert_close(
        feature_inconsistency(a, b, kind=kind, reduction="sum"), expected.sum()
    )


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@given(pair=feature_pairs())
def test_zero_on_identical_inputs_and_non_negative(
    kind: FeatureKind, pair: tuple[torch.Tensor, torch.Tensor]
) -> None:
    a, b = pair
    assert bool((feature_inconsistency(a, b, kind=kind, reduction="none") >= 0).all())
    same = feature_inconsistency(a, a.clone(), kind=kind, reduction="none")
    assert bool((same.abs() <= 1e-6).all())


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@given(pair=feature_pairs())
def test_symmetric(kind: FeatureKind, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    torch.testing.assert_close(
        feature_inconsistency(a, b, kind=kind, reduction="none"),
        feature_inconsistency(b, a, kind=kind, reduction="none"),
    )


@given(pair=feature_pairs())
def test_cosine_in_range_and_nmse_is_rescaled_cosine(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    a, b = pair
    cosine = feature_inconsistency(a, b, kind="cosine", reduction="none")
    assert bool(((cosine >= 0) & (cosine <= 2)).all())
    nmse = feature_inconsistency(a, b, kind="nmse", reduction="none")
    torch.testing.assert_close(nmse, 2 * cosine / a[0].numel())


@pytest.mark.parametrize("kind", ["cosine", "nmse"])
@given(pair=feature_pairs(), scale=st.floats(1e-3, 1e3))
def test_scale_invariant_kinds(
    kind: FeatureKind, pair: tuple[torch.Tensor, torch.Tensor], scale: float
) -> None:
    a, b = pair
    big = (a.flatten(1).norm(dim=1) > 1e-3) & (b.flatten(1).norm(dim=1) > 1e-3)
    torch.testing.assert_close(
        feature_inconsistency(a * scale, b, kind=kind, reduction="none")[big],
        feature_inconsistency(a, b, kind=kind, reduction="none")[big],
    )


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_scale_dependent_kinds(kind: FeatureKind) -> None:
    a = torch.tensor([[1.0, 2.0, 3.0]])
    b = torch.tensor([[0.0, 2.0, 5.0]])
    power = 2 if kind == "mse" else 1
    torch.testing.assert_close(
        feature_inconsistency(3 * a, 3 * b, kind=kind),
        3**power * feature_inconsistency(a, b, kind=kind),
    )


@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_trailing_dimensions_are_flattened(kind: FeatureKind) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 2, 4, 4, generator=gen)
    b = torch.randn(3, 2, 4, 4, generator=gen)
    torch.testing.assert_close(
        feature_inconsistency(a, b, kind=kind, reduction="none"),
        feature_inconsistency(a.reshape(3, -1), b.reshape(3, -1), kind=kind, reduction="none"),
    )


def test_known_cosine_values() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    got = feature_inconsistency(a, b, kind="cosine", reduction="none")
    expected = torch.tensor([0.0, 1.0, 2.0, 1.0 - math.sqrt(0.5), 0.5, 0.0])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", ["cosine", "nmse"])
def test_zero_vector_has_finite_gradient(kind: FeatureKind) -> None:
    a = torch.zeros(2, 3, requires_grad=True)
    b = torch.ones(2, 3, requires_grad=True)
    value = feature_inconsistency(a, b, kind=kind)
    value.backward()
    assert bool(torch.isfinite(value))
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())
    assert b.grad is not None and bool(torch.isfinite(b.grad).all())


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3\) and \(2, 4\)"):
        feature_inconsistency(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize(
    ("a", "match"),
    [
        (torch.zeros(3), "at least one feature dimension"),
        (torch.zeros(0, 3), "must not be empty"),
        (torch.zeros(2, 0), "must not be empty"),
        (torch.zeros(2, 3, dtype=torch.int32), "floating-point"),
    ],
)
def test_rejects_bad_inputs(a: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feature_inconsistency(a, a.clone())
