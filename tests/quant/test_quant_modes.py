"""Calibration / frozen / full-precision modes, saving and loading, stateless perturbed calls."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.func import functional_call

from risloss.models import resnet8
from risloss.quant import (
    ActivationFakeQuant,
    WeightFakeQuant,
    activation_quantizers,
    calibration,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
    freeze,
    quantize_model,
)


def make_student(seed: int = 0, **bits: int) -> nn.Module:
    torch.manual_seed(seed)
    model = resnet8(in_channels=1, image_size=28).eval()
    return quantize_model(model, w_bits=bits.get("w_bits", 4), a_bits=bits.get("a_bits", 4))


def batch(seed: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def calibrate(student: nn.Module, batches: int = 3) -> None:
    with torch.no_grad(), calibration(student):
        for i in range(batches):
            student(batch(100 + i))


def flags(model: nn.Module) -> dict[str, int]:
    return {
        name: int(buffer)
        for name, buffer in model.named_buffers()
        if name.endswith(("observer_enabled", "fake_quant_enabled"))
    }


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_fresh_student_is_uncalibrated_and_not_observing() -> None:
    student = make_student()
    quantizers = activation_quantizers(student)
    assert quantizers and not any(q.is_calibrated for q in quantizers.values())
    assert not any(bool(q.observer_enabled) for q in quantizers.values())
    before = snapshot(student)
    with torch.no_grad():
        student(batch(0))
    after = snapshot(student)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_calibration_observes_and_restores_flags() -> None:
    student = make_student()
    before = flags(student)
    with torch.no_grad(), calibration(student) as inside:
        assert inside is student
        assert all(bool(q.observer_enabled) for q in activation_quantizers(student).values())
        student(batch(0))
        student(batch(1))
    assert flags(student) == before
    for q in activation_quantizers(student).values():
        assert int(q.num_observed) == 2 and q.max_val > 0


def test_calibration_restores_flags_when_body_raises() -> None:
    student = make_student()
    quantizers = list(activation_quantizers(student).values())
    quantizers[0].disable_fake_quant()
    quantizers[1].enable_observer()
    before = flags(student)
    with pytest.raises(RuntimeError, match="boom"), calibration(student):
        student.apply(disable_fake_quant)  # the body may change flags too
        student(batch(0))
        raise RuntimeError("boom")
    assert flags(student) == before
    assert not bool(quantizers[0].fake_quant_enabled) and bool(quantizers[1].observer_enabled)
    assert quantizers[2].is_calibrated  # the observed ranges are kept


def test_calibration_requires_a_quantized_model() -> None:
    with pytest.raises(ValueError, match="quantize_model"), calibration(nn.Linear(2, 2)):
        pass
    with pytest.raises(ValueError, match="quantize_model"):
        freeze(nn.Sequential(nn.ReLU()))


def test_freeze_fixes_ranges() -> None:
    student = make_student()
    student.apply(enable_observer)
    with torch.no_grad():
        student(batch(0))
    assert freeze(student) is student
    frozen = snapshot(student)
    with torch.no_grad():
        student(batch(1) * 3)
    after = snapshot(student)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)


def test_toggles_with_apply() -> None:
    student = make_student()
    calibrate(student)
    x = batch(5)
    with torch.no_grad():
        quantized = student(x)
        student.apply(disable_fake_quant)
        assert not any(
            bool(m.fake_quant_enabled)
            for m in student.modules()
            if isinstance(m, (WeightFakeQuant, ActivationFakeQuant))
        )
        full_precision = student(x)
        student.apply(enable_fake_quant)
        assert torch.equal(student(x), quantized)
    assert not torch.equal(quantized, full_precision)
    student.apply(enable_observer)
    assert all(bool(q.observer_enabled) for q in activation_quantizers(student).values())
    student.apply(disable_observer)
    assert not any(bool(q.observer_enabled) for q in activation_quantizers(student).values())


def test_disabled_fake_quant_is_the_full_precision_model() -> None:
    torch.manual_seed(0)
    model = resnet8(in_channels=1, image_size=28).eval()
    student = quantize_model(model, w_bits=2, a_bits=2)
    calibrate(student)
    student.apply(disable_fake_quant)
    x = batch(7)
    with torch.no_grad():
        assert torch.equal(student(x), model(x))


def test_state_dict_roundtrip_weights_only() -> None:
    student = make_student(w_bits=3, a_bits=3)
    calibrate(student)
    quantizers = list(activation_quantizers(student).values())
    quantizers[0].enable_observer()  # a non-default flag must survive too
    quantizers[1].disable_fake_quant()
    buffer = io.BytesIO()
    torch.save(student.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh = make_student(seed=1, w_bits=3, a_bits=3)  # other random weights, never calibrated
    fresh.load_state_dict(state)
    for key, value in student.state_dict().items():
        loaded = fresh.state_dict()[key]
        assert loaded.dtype == value.dtype and torch.equal(loaded, value), key
    fresh_quantizers = list(activation_quantizers(fresh).values())
    assert bool(fresh_quantizers[0].observer_enabled)
    assert not bool(fresh_quantizers[1].fake_quant_enabled)
    # Stop the one observer in both, then compare outputs bitwise.
    quantizers[0].disable_observer()
    fresh_quantizers[0].disable_observer()
    x = batch(9)
    with torch.no_grad():
        assert torch.equal(fresh(x), student(x))


def test_functional_call_with_perturbed_weights_leaves_state_alone() -> None:
    student = make_student()
    calibrate(student)
    freeze(student)
    params = dict(student.named_parameters())
    buffers = dict(student.named_buffers())
    g = torch.Generator().manual_seed(0)
    noisy = {
        name: p.detach() + 0.05 * torch.randn(p.shape, generator=g) for name, p in params.items()
    }
    before = snapshot(student)
    buffers_before = {name: b.clone() for name, b in buffers.items()}
    x = batch(3)
    with torch.no_grad():
        clean = student(x)
        perturbed = functional_call(student, (noisy, buffers), (x,), strict=True)
        # The substituted weights are quantized: the call equals loading them into a copy.
        reference = make_student()
        reference.load_state_dict({**before, **noisy})
        assert torch.equal(perturbed, reference(x))
    assert not torch.equal(perturbed, clean)
    after = snapshot(student)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(buffers_before[k], buffers[k]) for k in buffers)


def test_functional_call_while_observing_updates_the_given_buffers() -> None:
    # Documented behaviour: an observing quantizer updates the buffers it is handed, in place,
    # and the flags it obeys are the ones in those buffers. Perturbed passes of the robustness
    # loss must therefore run frozen (outside calibration).
    student = make_student()
    key = "layer1.0.relu1.activation_fake_quant.num_observed"
    params: dict[str, torch.Tensor] = dict(student.named_parameters())
    with torch.no_grad(), calibration(student):
        copies = {name: b.clone() for name, b in student.named_buffers()}
        functional_call(student, (params, copies), (batch(0),))
        assert int(copies[key]) == 1 and int(student.get_buffer(key)) == 0
        functional_call(student, (params, dict(student.named_buffers())), (batch(0),))
        assert int(student.get_buffer(key)) == 1
    stale = {name: b.clone() for name, b in student.named_buffers()}  # observers off again
    with torch.no_grad(), calibration(student):
        functional_call(student, (params, stale), (batch(0),))
    assert int(stale[key]) == 1  # the stale copy says "not observing"
