"""prediction_divergence against a plain reference, and its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.functional import DIVERGENCE_KINDS, DivergenceKind, prediction_divergence
from tests.strategies import logit_pairs, logits, temperatures

LOG2 = math.log(2.0)


def _softmax(row: list[float], temperature: float) -> list[float]:
    scaled = [v / temperature for v in row]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def reference(
    p_logits: torch.Tensor, q_logits: torch.Tensor, kind: DivergenceKind, t: float
) -> list[float]:
    """Per-row divergence of ``(B, C)`` logits, one sample and one class at a time."""
    values = []
    for p_row, q_row in zip(p_logits.tolist(), q_logits.tolist(), strict=True):
        p, q = _softmax(p_row, t), _softmax(q_row, t)
        if kind == "l1":
            values.append(sum(abs(pi - qi) for pi, qi in zip(p, q, strict=True)))
        elif kind == "kl":
            values.append(_kl(p, q))
        elif kind == "skl":
            values.append(_kl(p, q) + _kl(q, p))
        else:
            m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
            values.append(0.5 * _kl(p, m) + 0.5 * _kl(q, m))
    return values


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
@given(
    data=st.data(),
    batch=st.integers(1, 5),
    classes=st.integers(2, 6),
    temperature=temperatures(),
)
def test_matches_reference(
    kind: DivergenceKind, data: st.DataObject, batch: int, classes: int, temperature: float
) -> None:
    p = data.draw(
        logits(min_batch=batch, max_batch=batch, min_classes=classes, max_classes=classes)
    )
    q = data.draw(
        logits(min_batch=batch, max_batch=batch, min_classes=classes, max_classes=classes)
    )
    expected = torch.tensor(reference(p, q, kind, temperature), dtype=torch.float64)
    got = prediction_divergence(p, q, kind=kind, temperature=temperature, reduction="none")
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(
        prediction_divergence(p, q, kind=kind, temperature=temperature), expected.mean()
    )
    torch.testing.assert_close(
        prediction_divergence(p, q, kind=kind, temperature=temperature, reduction="sum"),
        expected.sum(),
    )


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
def test_leading_dimensions_are_independent_samples(kind: DivergenceKind) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    q = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    got = prediction_divergence(p, q, kind=kind, reduction="none")
    assert got.shape == (2, 3)
    flat = prediction_divergence(p.reshape(6, 5), q.reshape(6, 5), kind=kind, reduction="none")
    torch.testing.assert_close(got.reshape(6), flat)
    single = prediction_divergence(p[1, 2], q[1, 2], kind=kind, reduction="none")
    assert single.shape == ()
    torch.testing.assert_close(single, got[1, 2])


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
@given(pair=logit_pairs(), temperature=temperatures())
def test_non_negative_and_bounded(
    kind: DivergenceKind, pair: tuple[torch.Tensor, torch.Tensor], temperature: float
) -> None:
    p, q = pair
    values = prediction_divergence(p, q, kind=kind, temperature=temperature, reduction="none")
    assert bool((values >= 0).all())
    if kind == "l1":
        assert bool((values <= 2 + 1e-12).all())
    if kind == "js":
        assert bool((values <= LOG2 + 1e-12).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
@given(data=st.data(), temperature=temperatures())
def test_zero_on_identical_inputs(
    kind: DivergenceKind, dtype: torch.dtype, data: st.DataObject, temperature: float
) -> None:
    p, _ = data.draw(logit_pairs(dtype=dtype))
    values = prediction_divergence(p, p.clone(), kind=kind, temperature=temperature)
    assert 0.0 <= values.item() <= 1e-6


@pytest.mark.parametrize("kind", ["l1", "skl", "js"])
@given(pair=logit_pairs(), temperature=temperatures())
def test_symmetric_kinds(
    kind: DivergenceKind, pair: tuple[torch.Tensor, torch.Tensor], temperature: float
) -> None:
    p, q = pair
    forward = prediction_divergence(p, q, kind=kind, temperature=temperature, reduction="none")
    backward = prediction_divergence(q, p, kind=kind, temperature=temperature, reduction="none")
    torch.testing.assert_close(forward, backward, atol=1e-12, rtol=1e-9)


def test_kl_is_not_symmetric() -> None:
    p = torch.tensor([[3.0, 0.0, 0.0]])
    q = torch.tensor([[1.0, 1.0, -2.0]])
    assert (
        abs(prediction_divergence(p, q, kind="kl") - prediction_divergence(q, p, kind="kl")) > 0.01
    )


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
@given(pair=logit_pairs(), temperature=temperatures())
def test_temperature_divides_logits(
    kind: DivergenceKind, pair: tuple[torch.Tensor, torch.Tensor], temperature: float
) -> None:
    p, q = pair
    scaled = prediction_divergence(
        p * temperature, q * temperature, kind=kind, temperature=temperature
    )
    torch.testing.assert_close(scaled, prediction_divergence(p, q, kind=kind))


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
@given(pair=logit_pairs(), shift=st.floats(-50.0, 50.0))
def test_invariant_to_a_constant_logit_shift(
    kind: DivergenceKind, pair: tuple[torch.Tensor, torch.Tensor], shift: float
) -> None:
    p, q = pair
    torch.testing.assert_close(
        prediction_divergence(p + shift, q, kind=kind, reduction="none"),
        prediction_divergence(p, q, kind=kind, reduction="none"),
        atol=1e-9,
        rtol=1e-7,
    )


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
def test_high_temperature_flattens_the_divergence(kind: DivergenceKind) -> None:
    p = torch.tensor([[6.0, 0.0, -3.0], [0.0, 5.0, 1.0]], dtype=torch.float64)
    q = p.flip(1)
    values = [prediction_divergence(p, q, kind=kind, temperature=t).item() for t in (1, 10, 1e4)]
    assert values[0] > values[1] > values[2]
    assert values[2] < 1e-3


def test_opposite_confident_predictions_reach_the_bounds() -> None:
    p = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    q = p.flip(1)
    assert prediction_divergence(p, q, kind="l1").item() == pytest.approx(2.0, abs=1e-6)
    assert prediction_divergence(p, q, kind="js").item() == pytest.approx(LOG2, abs=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCE_KINDS)
def test_extreme_logits_stay_finite(kind: DivergenceKind) -> None:
    p = torch.tensor([[1e4, -1e4, 0.0], [-3e3, 2e3, 5.0]], requires_grad=True)
    q = torch.tensor([[-1e4, 1e4, 0.0], [1.0, 0.0, -1.0]], requires_grad=True)
    value = prediction_divergence(p, q, kind=kind)
    assert bool(torch.isfinite(value))
    value.backward()
    assert p.grad is not None and q.grad is not None
    assert bool(torch.isfinite(p.grad).all()) and bool(torch.isfinite(q.grad).all())


@pytest.mark.parametrize(
    ("p_shape", "q_shape"), [((2, 3), (2, 4)), ((2, 3), (3, 3)), ((2, 3), (2, 1, 3))]
)
def test_shape_mismatch_names_both_shapes(
    p_shape: tuple[int, ...], q_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="same shape") as info:
        prediction_divergence(torch.zeros(p_shape), torch.zeros(q_shape))
    assert str(p_shape) in str(info.value) and str(q_shape) in str(info.value)


@pytest.mark.parametrize(
    ("p", "match"),
    [
        (torch.tensor(1.0), "class dimension"),
        (torch.zeros(0, 3), "must not be empty"),
        (torch.zeros(2, 3, dtype=torch.long), "floating-point"),
    ],
)
def test_rejects_bad_inputs(p: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prediction_divergence(p, p.clone())


def test_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match=r"p_logits must be a torch\.Tensor"):
        prediction_divergence([[0.0, 1.0]], torch.zeros(1, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan"), True, "2"])
def test_rejects_bad_temperature(temperature: object) -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        prediction_divergence(x, x, temperature=temperature)  # type: ignore[arg-type]
