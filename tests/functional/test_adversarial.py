"""adversarial_divergence against a plain reference, and its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.functional import adversarial_divergence, kd_loss
from tests.strategies import tensors


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def reference(student: torch.Tensor, teacher: torch.Tensor, agreeing_only: bool) -> float:
    """Mean over rows of KL(teacher || student), rows with different top-1 counted as 0."""
    total = 0.0
    rows = list(zip(student.tolist(), teacher.tolist(), strict=True))
    for s_row, t_row in rows:
        if agreeing_only and s_row.index(max(s_row)) != t_row.index(max(t_row)):
            continue
        p, q = _softmax(t_row), _softmax(s_row)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)
    return total / len(rows)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (draw(st.integers(1, 5)), draw(st.integers(2, 6)))
    return draw(tensors(shape, low=-8, high=8)), draw(tensors(shape, low=-8, high=8))


@given(_pairs(), st.booleans())
def test_matches_the_reference(pair: tuple[torch.Tensor, torch.Tensor], agreeing: bool) -> None:
    s, t = pair
    got = adversarial_divergence(s, t, agreeing_only=agreeing)
    assert float(got) == pytest.approx(reference(s, t, agreeing), rel=1e-9, abs=1e-12)
    assert float(got) >= 0.0


@given(_pairs())
def test_zero_on_equal_logits_and_at_most_the_unmasked_value(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    s, t = pair
    assert float(adversarial_divergence(t, t)) == pytest.approx(0.0, abs=1e-12)
    masked = adversarial_divergence(s, t)
    assert float(masked) <= float(adversarial_divergence(s, t, agreeing_only=False)) + 1e-12


@given(_pairs())
def test_unmasked_equals_the_distillation_loss_at_temperature_one(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    s, t = pair
    got = adversarial_divergence(s, t, agreeing_only=False)
    assert float(got) == pytest.approx(float(kd_loss(s, t, 1.0)), rel=1e-9, abs=1e-12)


def test_samples_the_two_classify_differently_add_nothing() -> None:
    t = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    s = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # agrees on the first row only
    both = adversarial_divergence(s, t)
    first = adversarial_divergence(s[:1], t[:1])
    assert float(both) == pytest.approx(float(first) / 2)


def test_gradients_reach_both_inputs_and_nothing_is_modified() -> None:
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.2, 0.0]], requires_grad=True)
    t = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 1.0]], requires_grad=True)
    before = (s.detach().clone(), t.detach().clone())
    adversarial_divergence(s, t).backward()
    assert s.grad is not None and t.grad is not None
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0
    assert torch.equal(s.detach(), before[0]) and torch.equal(t.detach(), before[1])


@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 3), (2, 4)), ((3,), (3,)), ((2, 3), (3, 3))])
def test_shapes_must_be_one_batch_of_logits(
    s_shape: tuple[int, ...], t_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="student_logits and teacher_logits"):
        adversarial_divergence(torch.zeros(s_shape), torch.zeros(t_shape))
