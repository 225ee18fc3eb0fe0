"""The fake-quantization kernels and the weight / activation quantizer modules."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from risloss.quant import (
    ActivationFakeQuant,
    WeightFakeQuant,
    affine_qparams,
    fake_quantize_activation,
    fake_quantize_weight,
)

bit_widths = st.integers(min_value=2, max_value=16)


SHAPES = st.sampled_from([(1, 5), (4, 7), (3, 2, 3, 3), (8, 1, 3, 3), (2, 16), (5, 3, 1, 1)])


@st.composite
def weight_tensors(draw: st.DrawFn) -> torch.Tensor:
    """Weights of conv- or linear-like shapes: arbitrary float32 values (repeats, zeros, exact
    rounding ties) or Gaussian draws."""
    if draw(st.booleans()):
        values = draw(
            hnp.arrays(
                np.float32,
                draw(SHAPES),
                elements=st.floats(-100, 100, width=32, allow_nan=False, allow_infinity=False),
            )
        )
        return torch.from_numpy(values.copy())
    return draw(gaussian_weights())


@st.composite
def gaussian_weights(draw: st.DrawFn) -> torch.Tensor:
    """Gaussian weights of varied magnitude and offset (no exact rounding ties, almost surely)."""
    shape = draw(SHAPES)
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.sampled_from([1e-4, 1e-2, 1.0, 30.0]))
    offset = draw(st.sampled_from([0.0, 0.5, -2.0]))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * magnitude + offset * magnitude


def reference_fake_quantize(values: list[float], bits: int) -> list[float]:
    """A plain-Python asymmetric min/max quantizer of one channel (the closed form)."""
    qmax = 2**bits - 1
    lo, hi = min(min(values), 0.0), max(max(values), 0.0)
    scale = max((hi - lo) / qmax, float(torch.finfo(torch.float32).eps))
    zero_point = min(max(round(-lo / scale), 0), qmax)
    out = []
    for v in values:
        level = min(max(round(v / scale) + zero_point, 0), qmax)
        out.append((level - zero_point) * scale)
    return out


# --- closed forms and reference implementation ------------------------------------------------


def test_affine_qparams_closed_form() -> None:
    scale, zero_point = affine_qparams(
        torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([2.0, 3.0, 0.0]), 2
    )
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32
    eps = torch.finfo(torch.float32).eps
    # [-1, 2] -> s = 1, z = 1; [1, 3] widened to [0, 3] -> s = 1, z = 0; [0, 0] -> s = eps, z = 0.
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.0, eps]))
    assert zero_point.tolist() == [1, 0, 0]


def test_affine_qparams_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        affine_qparams(torch.zeros(3), torch.zeros(2), 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_matches_reference(bits: int, per_channel: bool) -> None:
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 3, 3, 3, generator=g) * 0.3 + 0.05
    out = fake_quantize_weight(w, bits, per_channel=per_channel)
    if per_channel:
        expected = [reference_fake_quantize(row.tolist(), bits) for row in w.reshape(6, -1)]
        reference = torch.tensor(expected).reshape(w.shape)
    else:
        reference = torch.tensor(reference_fake_quantize(w.flatten().tolist(), bits)).reshape(
            w.shape
        )
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_activation_matches_closed_form() -> None:
    # 2 bits on [0, 3]: grid {0, 1, 2, 3}; values outside are clipped.
    x = torch.tensor([-1.0, 0.2, 0.6, 1.49, 2.51, 7.0])
    out = fake_quantize_activation(x, torch.tensor(0.0), torch.tensor(3.0), 2)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 3.0, 3.0]


def test_activation_range_must_be_scalar() -> None:
    with pytest.raises(ValueError, match="scalars"):
        fake_quantize_activation(torch.zeros(3), torch.zeros(2), torch.ones(2), 4)


@pytest.mark.parametrize("bits", [0, 1, 17, 32, -4])
def test_bits_out_of_range(bits: int) -> None:
    with pytest.raises(ValueError, match=r"bits must be an integer in 2\.\.16"):
        fake_quantize_weight(torch.randn(2, 3), bits)
    with pytest.raises(ValueError, match=r"bits must be an integer in 2\.\.16"):
        WeightFakeQuant(bits)
    with pytest.raises(ValueError, match=r"bits must be an integer in 2\.\.16"):
        ActivationFakeQuant(bits)


@pytest.mark.parametrize("bits", [4.0, True, "4"])
def test_bits_must_be_int(bits: object) -> None:
    with pytest.raises(ValueError, match="bits must be an integer"):
        WeightFakeQuant(bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, True])
def test_momentum_out_of_range(momentum: float) -> None:
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\)"):
        ActivationFakeQuant(4, momentum=momentum)


def test_weight_scalar_rejected() -> None:
    with pytest.raises(ValueError, match="at least one dimension"):
        fake_quantize_weight(torch.tensor(1.0), 4)


# --- properties -------------------------------------------------------------------------------


@given(w=weight_tensors(), bits=bit_widths)
def test_per_channel_distinct_values(w: torch.Tensor, bits: int) -> None:
    out = fake_quantize_weight(w, bits, per_channel=True)
    assert out.shape == w.shape and out.dtype == w.dtype
    for row in out.reshape(w.shape[0], -1):
        assert row.unique().numel() <= 2**bits


@given(w=weight_tensors(), bits=bit_widths)
def test_per_tensor_distinct_values(w: torch.Tensor, bits: int) -> None:
    out = fake_quantize_weight(w, bits, per_channel=False)
    assert out.unique().numel() <= 2**bits


@given(w=weight_tensors(), bits=bit_widths, per_channel=st.booleans())
def test_weight_error_within_half_step_and_zero_exact(
    w: torch.Tensor, bits: int, per_channel: bool
) -> None:
    out = fake_quantize_weight(w, bits, per_channel=per_channel)
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    scale, _ = affine_qparams(flat.amin(dim=1), flat.amax(dim=1), bits)
    err = (out - w).abs().reshape(flat.shape)
    # Every weight lies inside its own range: error at most half a step (plus float slack).
    assert bool((err <= scale[:, None] * (0.5 + 1e-3) + 1e-6).all())
    # Zero is on every grid: exact zeros stay exactly zero.
    assert bool((out[w == 0] == 0).all())


@given(w=gaussian_weights(), bits=bit_widths, per_channel=st.booleans())
def test_weight_idempotent(w: torch.Tensor, bits: int, per_channel: bool) -> None:
    once = fake_quantize_weight(w, bits, per_channel=per_channel)
    twice = fake_quantize_weight(once, bits, per_channel=per_channel)
    flat = once.reshape(w.shape[0], -1) if per_channel else once.reshape(1, -1)
    scale, _ = affine_qparams(flat.amin(dim=1), flat.amax(dim=1), bits)
    # Same integer level everywhere; the recomputed scale may differ in its last float bit, so
    # the values agree to a small fraction of one step (not necessarily bitwise). Exact ties at
    # the ends of the range are excluded (see test_weight_tie_at_range_end_regrids).
    diff = (twice - once).abs().reshape(flat.shape)
    assert bool((diff <= 0.05 * scale[:, None]).all())
    if bits <= 8:
        torch.testing.assert_close(twice, once, rtol=1e-5, atol=1e-6 * float(scale.max()))


def test_weight_tie_at_range_end_regrids() -> None:
    # [-100, 100] at 16 bits: the zero point is a rounding tie, the lowest weight lands on level
    # 1, so the quantized tensor spans one step less and a second pass uses a finer grid. The
    # values still move by at most half a step: the documented exception to idempotence.
    w = torch.tensor([[-100.0, 100.0, 0.0]])
    once = fake_quantize_weight(w, 16, per_channel=False)
    twice = fake_quantize_weight(once, 16, per_channel=False)
    scale, _ = affine_qparams(w.min(), w.max(), 16)
    assert (twice - once).abs().max() <= 0.5 * scale * (1 + 1e-3)


@given(
    seed=st.integers(0, 2**31 - 1),
    bits=bit_widths,
    lo=st.floats(-5.0, 0.0),
    width=st.floats(1e-3, 20.0),
)
def test_frozen_activation_distinct_and_idempotent(
    seed: int, bits: int, lo: float, width: float
) -> None:
    quantizer = ActivationFakeQuant(bits)
    quantizer.min_val.fill_(lo)
    quantizer.max_val.fill_(lo + width)
    quantizer.num_observed.fill_(1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 5, 5, generator=g) * width
    once = quantizer(x)
    assert once.unique().numel() <= 2**bits
    assert torch.equal(quantizer(once), once)
    torch.testing.assert_close(
        once, fake_quantize_activation(x, quantizer.min_val, quantizer.max_val, bits)
    )


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_straight_through_gradient(per_channel: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    upstream = torch.randn(4, 3, 3, 3, generator=g)
    (fake_quantize_weight(w, 3, per_channel=per_channel) * upstream).sum().backward()
    assert w.grad is not None
    torch.testing.assert_close(w.grad, upstream)


def test_activation_clipped_straight_through_gradient() -> None:
    x = torch.tensor([-1.0, 0.5, 2.0, 4.0], requires_grad=True)
    out = fake_quantize_activation(x, torch.tensor(0.0), torch.tensor(3.0), 4)
    out.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_float64_input_keeps_dtype() -> None:
    w = torch.randn(3, 4, dtype=torch.float64)
    assert fake_quantize_weight(w, 4).dtype == torch.float64
    assert fake_quantize_weight(w, 4, per_channel=False).dtype == torch.float64
    x = torch.rand(5, dtype=torch.float64)
    out = fake_quantize_activation(x, torch.tensor(0.0), torch.tensor(1.0), 4)
    assert out.dtype == torch.float64


# --- modules ----------------------------------------------------------------------------------


def test_weight_module_equals_function_and_toggles() -> None:
    w = torch.randn(5, 6)
    quantizer = WeightFakeQuant(3, per_channel=False)
    assert torch.equal(quantizer(w), fake_quantize_weight(w, 3, per_channel=False))
    quantizer.disable_fake_quant()
    assert quantizer(w) is w
    assert [name for name, _ in quantizer.named_buffers()] == ["fake_quant_enabled"]


def reference_ema(batches: list[torch.Tensor], momentum: float) -> tuple[float, float]:
    lo = hi = math.nan
    for i, batch in enumerate(batches):
        m, M = float(batch.min()), float(batch.max())
        if i == 0:
            lo, hi = m, M
        else:
            lo = momentum * lo + (1 - momentum) * m
            hi = momentum * hi + (1 - momentum) * M
    return lo, hi


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.99])
def test_activation_ema_matches_reference(momentum: float) -> None:
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(8, 4, generator=g) * (1 + i) for i in range(6)]
    quantizer = ActivationFakeQuant(4, momentum=momentum).enable_observer()
    for batch in batches:
        quantizer(batch)
    lo, hi = reference_ema(batches, momentum)
    assert int(quantizer.num_observed) == len(batches)
    assert quantizer.min_val.item() == pytest.approx(lo, rel=1e-5)
    assert quantizer.max_val.item() == pytest.approx(hi, rel=1e-5)


def test_activation_ema_has_no_bias_inflation() -> None:
    # A constant stream must leave the range exactly at the stream's range from the first step
    # (a "bias-corrected" EMA that re-divides the stored value inflates it instead).
    quantizer = ActivationFakeQuant(4, momentum=0.99).enable_observer()
    x = torch.tensor([0.0, 1.0, 2.5])
    for _ in range(5):
        quantizer(x)
        assert quantizer.min_val.item() == 0.0
        assert quantizer.max_val.item() == pytest.approx(2.5, rel=1e-6)


def test_uncalibrated_activation_passes_through() -> None:
    quantizer = ActivationFakeQuant(2)
    x = torch.randn(3, 4)
    assert not quantizer.is_calibrated
    assert quantizer(x) is x
    assert int(quantizer.num_observed) == 0


def test_disabled_observer_keeps_buffers() -> None:
    quantizer = ActivationFakeQuant(4).enable_observer()
    quantizer(torch.tensor([0.0, 2.0]))
    quantizer.disable_observer()
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    out = quantizer(torch.tensor([-5.0, 9.0]))
    assert out.tolist() == [0.0, 2.0]  # clipped to the frozen range [0, 2]
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_activation_fake_quant_disabled_still_observes() -> None:
    quantizer = ActivationFakeQuant(2).enable_observer().disable_fake_quant()
    x = torch.tensor([0.0, 0.3, 3.0])
    assert quantizer(x) is x
    assert quantizer.is_calibrated and quantizer.max_val.item() == 3.0


def test_observation_happens_before_quantization() -> None:
    quantizer = ActivationFakeQuant(2).enable_observer()
    # First call: the range initializes from this very batch, then quantizes with it.
    out = quantizer(torch.tensor([0.0, 1.2, 3.0]))
    assert out.tolist() == [0.0, 1.0, 3.0]


def test_activation_buffers_and_defaults() -> None:
    quantizer = ActivationFakeQuant()
    names = [name for name, _ in quantizer.named_buffers()]
    assert names == ["min_val", "max_val", "num_observed", "observer_enabled", "fake_quant_enabled"]
    assert quantizer.bits == 4 and quantizer.momentum == 0.9
    assert not bool(quantizer.observer_enabled) and bool(quantizer.fake_quant_enabled)
    assert all(buffer.shape == () for buffer in quantizer.buffers())
