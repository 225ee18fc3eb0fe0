"""QuantizationWeightNoise: the student's rounding error as a weight perturbation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from risloss import RobustnessLoss
from risloss._stateless import module_state_snapshot, stateless_call
from risloss.models import resnet8
from risloss.perturb import (
    GaussianWeightNoise,
    QuantizationWeightNoise,
    WeightPerturbation,
    by_name,
)
from risloss.quant import fake_quantize_weight, quantize_model
from tests.strategies import shapes, tensors

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_teacher() -> nn.Module:
    torch.manual_seed(0)
    return resnet8(in_channels=1).eval().requires_grad_(False)


def reference_grid(w: torch.Tensor, bits: int, per_channel: bool) -> tuple[list[float], list[int]]:
    """Step and zero point of each output channel (or of the tensor), in plain Python.

    Ranges and steps are rounded to float32, as the quantizer stores them.
    """
    qmax = 2**bits - 1

    def f32(value: float) -> float:
        return float(torch.tensor(value, dtype=torch.float32))

    rows = (
        [w[c].flatten().tolist() for c in range(w.shape[0])]
        if per_channel
        else [w.flatten().tolist()]
    )
    steps, zeros = [], []
    for values in rows:
        lo, hi = f32(min(min(values), 0.0)), f32(max(max(values), 0.0))
        step = max(f32(f32(hi - lo) / qmax), FLOAT32_EPS)
        steps.append(step)
        zeros.append(min(max(round(f32(-lo / step)), 0), qmax))
    return steps, zeros


def grid_positions(
    w: torch.Tensor, w_tilde: torch.Tensor, bits: int, per_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w_tilde / s + z`` (should be integers in ``[0, 2**bits - 1]``) and ``|w_tilde - w| / s``,
    on the grid of ``w``, per entry."""
    steps, zeros = reference_grid(w, bits, per_channel)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if per_channel:
        s = torch.tensor(steps, dtype=torch.float64).view(shape)
        z = torch.tensor(zeros, dtype=torch.float64).view(shape)
    else:
        s = torch.tensor(steps[0], dtype=torch.float64)
        z = torch.tensor(float(zeros[0]), dtype=torch.float64)
    level = w_tilde.double() / s + z
    moved = (w_tilde.double() - w.double()).abs() / s
    return level, moved


def assert_levels(level: torch.Tensor, bits: int) -> None:
    """Every entry is an integer level of the ``bits``-bit grid, up to the float32 rounding of
    the kernel's output (relative to the largest level)."""
    nearest = level.round()
    torch.testing.assert_close(level, nearest, rtol=0, atol=2**bits * FLOAT32_EPS)
    assert float(nearest.min()) >= 0 and float(nearest.max()) <= 2**bits - 1


# ------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_nearest_rounding_is_the_students_quantizer(bits: int, per_channel: bool) -> None:
    model = small_teacher()
    noise = QuantizationWeightNoise(bits, rounding="nearest", per_channel=per_channel)
    params = noise.perturbed_parameters(model)
    targets = noise.targets(model)
    assert len(targets) == 10  # every conv and linear weight
    for name, w in model.named_parameters():
        if name not in targets:
            assert params[name] is w
            continue
        expected = fake_quantize_weight(w, bits, per_channel=per_channel)
        torch.testing.assert_close(params[name], expected, rtol=0, atol=1e-6)
        # ... and the closed form of that quantizer, written out here.
        steps, zeros = reference_grid(w, bits, per_channel)
        qmax = 2**bits - 1
        for c in range(w.shape[0]) if per_channel else [None]:
            row = w[c] if c is not None else w
            s, z = (steps[c], zeros[c]) if c is not None else (steps[0], zeros[0])
            by_hand = s * ((row.double() / s).round() + z).clamp(0, qmax) - s * z
            got = params[name][c] if c is not None else params[name]
            torch.testing.assert_close(got.double(), by_hand, rtol=0, atol=1e-6)


def test_perturbed_teacher_is_the_quantized_students_weights() -> None:
    # A fresh student's activation quantizers are uncalibrated and pass through unchanged, so
    # the two networks differ only in their weights.
    teacher = small_teacher()
    student = quantize_model(teacher, w_bits=4, a_bits=8).eval()
    x = torch.randn(4, 1, 28, 28, generator=seeded(0))
    params = QuantizationWeightNoise(4, rounding="nearest").perturbed_parameters(teacher)
    perturbed = stateless_call(teacher, params, (x,))
    torch.testing.assert_close(perturbed, student(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(perturbed, teacher(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("per_channel", [True, False])
def test_stochastic_rounding_lands_on_a_neighbouring_level(per_channel: bool) -> None:
    w = torch.randn(16, 8, 3, 3, generator=seeded(0), dtype=torch.float64)
    bits = 3
    delta = QuantizationWeightNoise(bits, per_channel=per_channel).sample({"w": w}, seeded(1))["w"]
    level, moved = grid_positions(w, w + delta, bits, per_channel)
    assert_levels(level, bits)
    assert float(moved.max()) <= 1 + 1e-4  # at most one step away ...
    nearest = QuantizationWeightNoise(bits, rounding="nearest", per_channel=per_channel)
    _, moved_nearest = grid_positions(w, w + nearest.sample({"w": w})["w"], bits, per_channel)
    assert float(moved_nearest.max()) <= 0.5 + 1e-4
    assert float(moved.max()) > 0.6  # ... and sometimes to the farther of the two levels


def test_stochastic_rounding_is_unbiased_inside_the_grid() -> None:
    w = torch.randn(4, 256, generator=seeded(0), dtype=torch.float64)
    noise = QuantizationWeightNoise(2)
    draws = torch.stack([noise.sample({"w": w}, seeded(s))["w"] for s in range(400)])
    steps, _ = reference_grid(w, 2, per_channel=True)
    step = torch.tensor(steps, dtype=torch.float64).view(-1, 1)
    lo = torch.minimum(w.min(dim=1, keepdim=True).values, torch.zeros(1, dtype=torch.float64))
    hi = torch.maximum(w.max(dim=1, keepdim=True).values, torch.zeros(1, dtype=torch.float64))
    inside = (w > lo + step) & (w < hi - step)  # levels are clamped only near the ends
    mean_error = (draws.mean(0) / step)[inside]
    assert float(mean_error.abs().mean()) < 0.03  # E[q(W)] = W, in steps
    nearest = QuantizationWeightNoise(2, rounding="nearest").sample({"w": w})["w"] / step
    assert float(nearest[inside].abs().mean()) > 0.15  # rounding to nearest is biased per weight


def test_noise_shrinks_as_bits_grow() -> None:
    model = small_teacher()
    for rounding in ("stochastic", "nearest"):
        sizes = {}
        for bits in (2, 4, 8):
            noise = QuantizationWeightNoise(bits, rounding=rounding)  # type: ignore[arg-type]
            deltas = noise.sample(model, seeded(0))
            sizes[bits] = sum(float(d.abs().sum()) for d in deltas.values())
        assert sizes[2] > 3 * sizes[4] > 3 * 8 * sizes[8] > 0, (rounding, sizes)


def test_eps_scales_the_rounding_error() -> None:
    model = small_teacher()
    full = QuantizationWeightNoise(4).sample(model, seeded(3))
    half = QuantizationWeightNoise(4, eps=0.5).sample(model, seeded(3))
    zero = QuantizationWeightNoise(4, eps=0.0).sample(model, seeded(3))
    for name in full:
        torch.testing.assert_close(half[name], 0.5 * full[name])
        assert bool((zero[name] == 0).all())
    perturbed = QuantizationWeightNoise(4, eps=0.0).perturbed_parameters(model, seeded(3))
    for name, p in model.named_parameters():
        assert torch.equal(perturbed[name], p)


# ------------------------------------------------------------------------------------------
# Random subsets of channels and layers
# ------------------------------------------------------------------------------------------


def test_channel_subset_quantizes_some_channels_exactly() -> None:
    w = torch.randn(400, 9, generator=seeded(0))
    exact = QuantizationWeightNoise(4, rounding="nearest").sample({"w": w})["w"]
    delta = QuantizationWeightNoise(4, rounding="nearest", p=0.3).sample({"w": w}, seeded(1))["w"]
    quantized = [c for c in range(400) if torch.equal(delta[c], exact[c])]
    untouched = [c for c in range(400) if bool((delta[c] == 0).all())]
    assert len(quantized) + len(untouched) == 400  # each channel: all or nothing
    assert 0.2 < len(quantized) / 400 < 0.4  # about p of them


def test_layer_subset_quantizes_whole_tensors() -> None:
    model = small_teacher()
    exact = QuantizationWeightNoise(4, rounding="nearest").sample(model)
    noise = QuantizationWeightNoise(4, rounding="nearest", p=0.5, subset="layer")
    counts = []
    for seed in range(5):
        deltas = noise.sample(model, seeded(seed))
        on = [n for n in deltas if torch.equal(deltas[n], exact[n])]
        off = [n for n in deltas if bool((deltas[n] == 0).all())]
        assert len(on) + len(off) == len(deltas)
        counts.append(len(on))
    assert min(counts) < len(exact) and max(counts) > 0
    assert len(set(counts)) > 1 or counts[0] not in (0, len(exact))


# ------------------------------------------------------------------------------------------
# Randomness
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "noise",
    [
        QuantizationWeightNoise(4),
        QuantizationWeightNoise(4, rounding="nearest", p=0.5),
        QuantizationWeightNoise(4, p=0.5, subset="layer"),
    ],
    ids=["stochastic", "channel-subset", "layer-subset"],
)
def test_draws_repeat_with_a_seed_and_differ_across_seeds(noise: QuantizationWeightNoise) -> None:
    model = small_teacher()
    state = torch.get_rng_state()
    a = noise.sample(model, seeded(0))
    again = noise.sample(model, seeded(0))
    b = noise.sample(model, seeded(1))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not touched
    assert all(torch.equal(a[n], again[n]) for n in a)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_nearest_rounding_on_every_unit_draws_nothing() -> None:
    model = small_teacher()
    generator = seeded(0)
    before = generator.get_state()
    first = QuantizationWeightNoise(4, rounding="nearest").sample(model, generator)
    assert torch.equal(generator.get_state(), before)
    second = QuantizationWeightNoise(4, rounding="nearest").sample(model, seeded(9))
    assert all(torch.equal(first[n], second[n]) for n in first)


# ------------------------------------------------------------------------------------------
# Use with the robustness loss and stateless calls
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_robustness_loss_leaves_the_teacher_bitwise_unchanged(training: bool) -> None:
    teacher = small_teacher().train(training)
    before = module_state_snapshot(teacher)
    rob = RobustnessLoss(
        teacher,
        weight_perturbation=QuantizationWeightNoise(3),
        mode="weight",
        num_draws=2,
        generator=seeded(0),
    )
    x = torch.randn(4, 1, 28, 28, generator=seeded(1), requires_grad=True)
    for _ in range(2):
        loss = rob(x)
        loss.backward()
    assert float(loss.detach()) > 0 and x.grad is not None
    assert module_state_snapshot(teacher).differences(before) == []
    assert all(p.grad is None for p in teacher.parameters())


def test_robustness_loss_draws_follow_its_generator() -> None:
    teacher = small_teacher()
    x = torch.randn(4, 1, 28, 28, generator=seeded(1))

    def value(seed: int) -> float:
        rob = RobustnessLoss(
            teacher,
            weight_perturbation=QuantizationWeightNoise(3),
            mode="weight",
            generator=seeded(seed),
        )
        return float(rob(x))

    assert value(0) == value(0)
    assert value(0) != value(1)


def test_functional_call_with_perturbed_parameters() -> None:
    teacher = small_teacher()
    before = module_state_snapshot(teacher)
    params = QuantizationWeightNoise(4).perturbed_parameters(teacher, seeded(0))
    x = torch.randn(2, 1, 28, 28, generator=seeded(1))
    direct = torch.func.functional_call(teacher, params, (x,))
    torch.testing.assert_close(direct, stateless_call(teacher, params, (x,)))
    assert direct.shape == (2, 10) and not torch.allclose(direct, teacher(x))
    assert module_state_snapshot(teacher).differences(before) == []


def test_deltas_carry_no_graph_and_perturbed_weights_keep_it() -> None:
    model = nn.Linear(3, 2)
    noise = QuantizationWeightNoise(4)
    deltas = noise.sample(model, seeded(0))
    assert deltas["weight"].grad_fn is None and not deltas["weight"].requires_grad
    stateless_call(
        model, noise.perturbed_parameters(model, seeded(0)), (torch.randn(4, 3),)
    ).sum().backward()
    assert model.weight.grad is not None


# ------------------------------------------------------------------------------------------
# Property
# ------------------------------------------------------------------------------------------


@st.composite
def weights(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    return draw(tensors(shape, low=-1.0, high=1.0)) * scale


@given(
    w=weights(),
    bits=st.integers(2, 8),
    rounding=st.sampled_from(["stochastic", "nearest"]),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_perturbed_weight_is_a_level_of_the_students_grid(
    w: torch.Tensor, bits: int, rounding: str, per_channel: bool, seed: int
) -> None:
    noise = QuantizationWeightNoise(bits, rounding=rounding, per_channel=per_channel)  # type: ignore[arg-type]
    delta = noise.sample({"w": w}, seeded(seed))["w"]
    assert delta.shape == w.shape and delta.dtype == w.dtype
    assert torch.equal(delta, noise.sample({"w": w}, seeded(seed))["w"])
    level, moved = grid_positions(w, w + delta, bits, per_channel)
    assert_levels(level, bits)
    assert float(moved.max()) <= (1.0 if rounding == "stochastic" else 0.5) + 1e-4


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 1}, r"^bits must be an integer in 2\.\.16, got 1"),
        ({"bits": 17}, r"^bits must be an integer in 2\.\.16"),
        ({"bits": 4.0}, r"^bits must be an integer"),
        ({"bits": True}, r"^bits must be an integer"),
        ({"bits": 4, "eps": -0.1}, r"^eps must be a finite number >= 0"),
        ({"bits": 4, "eps": math.nan}, r"^eps must be a finite number >= 0"),
        ({"bits": 4, "eps": "1"}, r"^eps must be a finite number >= 0"),
        ({"bits": 4, "rounding": "floor"}, r"^rounding must be one of \('stochastic', 'nearest'\)"),
        ({"bits": 4, "p": 0.0}, r"^p must be a finite number in \(0, 1\], got 0.0"),
        ({"bits": 4, "p": 1.5}, r"^p must be a finite number in \(0, 1\]"),
        ({"bits": 4, "p": math.nan}, r"^p must be a finite number in \(0, 1\]"),
        ({"bits": 4, "subset": "filter"}, r"^subset must be one of \('channel', 'layer'\)"),
        ({"bits": 4, "per_channel": 1}, r"^per_channel must be True or False"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantizationWeightNoise(**kwargs)  # type: ignore[arg-type]


def test_bad_sources_and_selectors() -> None:
    with pytest.raises(TypeError, match="select must be callable"):
        QuantizationWeightNoise(4, select="conv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one tensor"):
        QuantizationWeightNoise(4).sample({})
    with pytest.raises(ValueError, match=r"'scale' has no dimensions"):
        QuantizationWeightNoise(4).sample({"scale": torch.tensor(2.0)})
    with pytest.raises(ValueError, match=r"selects no parameter.*0\.weight"):
        QuantizationWeightNoise(4).targets(nn.Sequential(nn.BatchNorm1d(3)))
    model = resnet8()
    assert QuantizationWeightNoise(4, select=by_name("fc.*")).targets(model) == (
        "fc.weight",
        "fc.bias",
    )
    assert QuantizationWeightNoise(4).targets(model) == GaussianWeightNoise(0.1).targets(model)


def test_configuration_is_frozen_and_comparable() -> None:
    noise = QuantizationWeightNoise(4)
    assert isinstance(noise, WeightPerturbation)
    with pytest.raises(AttributeError):
        noise.bits = 8  # type: ignore[misc]
    assert noise == QuantizationWeightNoise(bits=4, eps=1.0, rounding="stochastic", p=1.0)
    assert "bits=4" in repr(noise) and "rounding='stochastic'" in repr(noise)
