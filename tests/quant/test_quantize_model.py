"""quantize_model: what it replaces, what it leaves alone, and how it validates."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import mobilenet_v2, resnet18

from risloss.models import resnet8
from risloss.quant import (
    ActivationFakeQuant,
    QuantConv2d,
    QuantLinear,
    QuantReLU,
    QuantSpec,
    activation_quantizers,
    calibration,
    freeze,
    quantize_model,
    quantized_layers,
)

# Each example builds and runs a network: fewer examples than the profile's default.
PROPERTY = settings(max_examples=10)


def small_resnet8() -> nn.Module:
    torch.manual_seed(0)
    return resnet8(in_channels=1, image_size=28).eval()


@contextmanager
def capture_activation_outputs(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, quantizer in activation_quantizers(model).items():

        def hook(module: nn.Module, args: object, out: torch.Tensor, name: str = name) -> None:
            outputs[name] = out.detach()

        handles.append(quantizer.register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["w_bits", "a_bits", "first_last_bits"])
@pytest.mark.parametrize("value", [0, 1, 17, 64, 2.0, True])
def test_bits_out_of_range_name_the_argument(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must be an integer in 2\.\.16"):
        if argument == "w_bits":
            quantize_model(small_resnet8(), w_bits=value)  # type: ignore[arg-type]
        elif argument == "a_bits":
            quantize_model(small_resnet8(), a_bits=value)  # type: ignore[arg-type]
        else:
            quantize_model(small_resnet8(), first_last_bits=value)  # type: ignore[arg-type]


def test_other_arguments_validated() -> None:
    with pytest.raises(ValueError, match="momentum"):
        quantize_model(small_resnet8(), momentum=1.0)
    with pytest.raises(ValueError, match="per_channel must be True or False"):
        quantize_model(small_resnet8(), per_channel="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inplace must be True or False"):
        quantize_model(small_resnet8(), inplace=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        quantize_model(lambda x: x)  # type: ignore[arg-type]


def test_spec_is_frozen() -> None:
    spec = QuantSpec(w_bits=8)
    with pytest.raises(AttributeError):
        spec.w_bits = 4  # type: ignore[misc]


def test_model_without_layers_raises() -> None:
    with pytest.raises(ValueError, match=r"at least one nn\.Conv2d or nn\.Linear.*Sequential"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Flatten()))


def test_already_quantized_raises() -> None:
    student = quantize_model(small_resnet8())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(student)


# --- what is replaced -------------------------------------------------------------------------


def test_resnet8_replacements_and_hyperparameters() -> None:
    model = small_resnet8()
    student = quantize_model(model)
    originals = {name: m for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}
    layers = quantized_layers(student)
    assert list(layers) == list(originals)
    assert len(layers) == 10
    for name, layer in layers.items():
        original = originals[name]
        assert isinstance(layer, type(original))
        assert type(layer) is (QuantConv2d if isinstance(original, nn.Conv2d) else QuantLinear)
        assert torch.equal(layer.weight, original.weight)
        assert layer.weight is not original.weight
        if isinstance(original, nn.Conv2d):
            assert isinstance(layer, nn.Conv2d)
            for attr in ("stride", "padding", "dilation", "groups", "padding_mode"):
                assert getattr(layer, attr) == getattr(original, attr)
    relus = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 7
    assert list(activation_quantizers(student)) == [f"{n}.activation_fake_quant" for n in relus]
    for name in relus:
        assert isinstance(student.get_submodule(name), QuantReLU)
    assert not student.training


def test_state_dict_keys_are_documented() -> None:
    student = quantize_model(small_resnet8())
    keys = set(student.state_dict())
    assert "conv1.weight_fake_quant.fake_quant_enabled" in keys
    assert "fc.weight_fake_quant.fake_quant_enabled" in keys
    for buffer in ("min_val", "max_val", "num_observed", "observer_enabled", "fake_quant_enabled"):
        assert f"layer1.0.relu1.activation_fake_quant.{buffer}" in keys
    original_keys = set(small_resnet8().state_dict())
    assert original_keys <= keys


@PROPERTY
@given(w_bits=st.integers(2, 8), per_channel=st.booleans())
def test_layer_weights_take_at_most_2_pow_bits_values(w_bits: int, per_channel: bool) -> None:
    student = quantize_model(small_resnet8(), w_bits=w_bits, per_channel=per_channel)
    for layer in quantized_layers(student).values():
        quantized = layer.weight_fake_quant(layer.weight).detach()
        if per_channel:
            for row in quantized.reshape(quantized.shape[0], -1):
                assert row.unique().numel() <= 2**w_bits
        else:
            assert quantized.unique().numel() <= 2**w_bits


@PROPERTY
@given(a_bits=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_calibrated_activations_take_at_most_2_pow_bits_values(a_bits: int, seed: int) -> None:
    student = quantize_model(small_resnet8(), w_bits=8, a_bits=a_bits)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), calibration(student):
        for _ in range(2):
            student(torch.randn(4, 1, 28, 28, generator=g))
    freeze(student)
    quantizers = activation_quantizers(student)
    with torch.no_grad(), capture_activation_outputs(student) as outputs:
        student(torch.randn(4, 1, 28, 28, generator=g) * 2)
    assert set(outputs) == set(quantizers)
    for name, out in outputs.items():
        assert out.unique().numel() <= 2**a_bits, name
        # Idempotent once frozen.
        assert torch.equal(quantizers[name](out), out)


@pytest.mark.parametrize("first_last_bits", [None, 8])
def test_first_last_bits(first_last_bits: int | None) -> None:
    student = quantize_model(small_resnet8(), w_bits=3, first_last_bits=first_last_bits)
    bits = {name: layer.weight_fake_quant.bits for name, layer in quantized_layers(student).items()}
    edge = 3 if first_last_bits is None else 8
    assert bits.pop("conv1") == edge and bits.pop("fc") == edge
    assert set(bits.values()) == {3}
    # Only the weights: the activation quantizers all use a_bits.
    assert {q.bits for q in activation_quantizers(student).values()} == {4}
    if first_last_bits == 8:
        conv1 = quantized_layers(student)["conv1"]
        w = conv1.weight_fake_quant(conv1.weight)
        assert max(row.unique().numel() for row in w.reshape(w.shape[0], -1)) > 2**3


def test_functional_relu_is_not_covered() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.relu(self.fc1(x)))

    student = quantize_model(Net())
    assert len(quantized_layers(student)) == 2
    assert activation_quantizers(student) == {}


def test_subclasses_are_left_alone() -> None:
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(3, 3), MyLinear(3, 3))
    student = quantize_model(model)
    assert isinstance(student, nn.Sequential)
    assert type(student[0]) is QuantLinear and type(student[1]) is MyLinear


def test_tied_module_replaced_once() -> None:
    shared = nn.Linear(4, 4)
    relu = nn.ReLU()
    model = nn.Sequential(shared, relu, shared, relu)
    student = quantize_model(model)
    assert isinstance(student, nn.Sequential)
    assert student[0] is student[2] and isinstance(student[0], QuantLinear)
    assert student[1] is student[3] and isinstance(student[1], QuantReLU)
    assert len(activation_quantizers(student)) == 1


def test_bare_layer() -> None:
    fc = nn.Linear(3, 2)
    student = quantize_model(fc, w_bits=2)
    assert isinstance(student, QuantLinear) and type(fc) is nn.Linear
    with pytest.raises(ValueError, match="bare layer"):
        quantize_model(fc, inplace=True)


# --- copy versus in place ---------------------------------------------------------------------


def test_original_untouched() -> None:
    model = small_resnet8()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    types = {name: type(m) for name, m in model.named_modules()}
    student = quantize_model(model, w_bits=2, a_bits=2)
    with calibration(student):
        student(torch.randn(2, 1, 28, 28)).sum().backward()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert {name: type(m) for name, m in model.named_modules()} == types
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_inplace_returns_same_object() -> None:
    model = small_resnet8()
    weight = model.get_submodule("conv1").get_parameter("weight")
    student = quantize_model(model, inplace=True)
    assert student is model
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, QuantConv2d) and conv1.weight is weight


# --- torchvision ------------------------------------------------------------------------------


def test_torchvision_resnet18() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    student = quantize_model(model, w_bits=4, a_bits=4)
    assert len(quantized_layers(student)) == 21  # 20 convolutions + fc
    relus = [m for m in student.modules() if isinstance(m, QuantReLU)]
    assert len(relus) == 9  # the stem's ReLU and one per BasicBlock
    assert sorted(r.num_sites for r in relus) == [1] + [2] * 8
    quantizers = activation_quantizers(student)
    assert len(quantizers) == 17  # one per call site
    assert "layer1.0.relu.activation_fake_quant_1" in quantizers
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), calibration(student):
        student(x)
    assert all(int(q.num_observed) == 1 for q in quantizers.values())
    relu = student.get_submodule("layer2.1.relu")
    assert isinstance(relu, QuantReLU)
    first, second = relu.sites
    # The two call sites (after bn1, after the residual sum) keep separate ranges.
    assert first.max_val.item() != second.max_val.item()
    with torch.no_grad():
        out = student(x)
        # A second forward still works: each block resets its call-site counter.
        assert torch.equal(student(x), out)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # Copies keep working on their own quantizers.
    duplicate = copy.deepcopy(student)
    with torch.no_grad():
        for _ in range(2):  # the copy's blocks reset the copy's counters
            assert torch.equal(duplicate(x), out)


def test_torchvision_mobilenet_v2() -> None:
    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=10).eval()
    student = quantize_model(model, w_bits=4, a_bits=4, first_last_bits=8)
    layers = quantized_layers(student)
    assert len(layers) == 53  # 52 convolutions + the classifier
    assert layers["features.0.0"].weight_fake_quant.bits == 8
    assert layers["classifier.1"].weight_fake_quant.bits == 8
    assert layers["features.18.0"].weight_fake_quant.bits == 4
    quantizers = activation_quantizers(student)
    assert len(quantizers) == 35  # one per ReLU6
    assert all(isinstance(q, ActivationFakeQuant) for q in quantizers.values())
    depthwise = layers["features.2.conv.1.0"]
    assert depthwise.groups == depthwise.in_channels == 96
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), calibration(student):
        student(x)
    assert all(q.is_calibrated and q.max_val.item() <= 6.0 for q in quantizers.values())
    with torch.no_grad():
        out = student(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
