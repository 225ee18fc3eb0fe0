"""Contract suite: every loss function, every reduction.

Shapes per reduction, dtype preservation, float64 gradcheck, inputs left unchanged, non-finite
inputs rejected, configuration errors that name the argument and its allowed values.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from risloss.functional import NonFiniteInputError
from tests.functional._cases import BAD_CONFIGS, CASES, REDUCTIONS, Case

cases = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)


@cases
@reductions
def test_output_shape(case: Case, reduction: str) -> None:
    out = case.call(case.make(torch.float32), reduction)
    assert out.shape == (case.none_shape if reduction == "none" else ())


@cases
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_preserved(case: Case, dtype: torch.dtype) -> None:
    for reduction in REDUCTIONS:
        out = case.call(case.make(dtype), reduction)
        assert out.dtype == dtype
        assert bool(torch.isfinite(out).all())


@cases
@reductions
def test_gradcheck(case: Case, reduction: str) -> None:
    inputs = tuple(t.requires_grad_() for t in case.make(torch.float64))
    assert torch.autograd.gradcheck(lambda *x: case.call(x, reduction), inputs)


@cases
def test_inputs_are_not_modified(case: Case) -> None:
    inputs = tuple(t.requires_grad_() for t in case.make(torch.float64))
    before = [t.detach().clone() for t in inputs]
    versions = [t._version for t in inputs]
    case.call(inputs, "mean").backward()
    for t, old, version in zip(inputs, before, versions, strict=True):
        assert torch.equal(t.detach(), old)
        assert t._version == version
        assert t.grad is not None


@cases
def test_no_graph_without_grad_inputs(case: Case) -> None:
    assert not case.call(case.make(torch.float64), "mean").requires_grad


@cases
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_raise(case: Case, bad: float) -> None:
    clean = case.make(torch.float32)
    for index in range(len(clean)):
        inputs = list(clean)
        broken = inputs[index].clone()
        broken.view(-1)[-1] = bad
        inputs[index] = broken
        with pytest.raises(NonFiniteInputError, match="NaN or Inf"):
            case.call(tuple(inputs), "mean")


@cases
def test_vmap_over_an_extra_batch_dimension(case: Case) -> None:
    inputs = case.make(torch.float64)
    stacked = tuple(torch.stack([t, 2 * t]) for t in inputs)
    out = torch.vmap(lambda *x: case.call(x, "none"))(*stacked)
    torch.testing.assert_close(out[0], case.call(inputs, "none"))
    torch.testing.assert_close(out[1], case.call(tuple(2 * t for t in inputs), "none"))


@pytest.mark.parametrize(
    ("call", "argument", "allowed"),
    [c[1:] for c in BAD_CONFIGS],
    ids=[c[0] for c in BAD_CONFIGS],
)
def test_bad_configuration_names_argument_and_allowed_values(
    call: Callable[[], object], argument: str, allowed: str
) -> None:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{argument} must be")
    assert allowed in message


@cases
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(case: Case) -> None:
    inputs = case.make(torch.float64)
    on_gpu = tuple(t.cuda().requires_grad_() for t in inputs)
    for reduction in REDUCTIONS:
        out = case.call(on_gpu, reduction)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), case.call(inputs, reduction))
    case.call(on_gpu, "mean").backward()
    assert all(t.grad is not None and t.grad.device.type == "cuda" for t in on_gpu)
