"""QuantConv2d, QuantLinear and QuantReLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from risloss.quant import (
    ActivationFakeQuant,
    QuantConv2d,
    QuantLinear,
    QuantReLU,
    fake_quantize_weight,
)

CONVS = [
    nn.Conv2d(4, 6, 3),
    nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(4, 8, (3, 1), padding=(1, 0), dilation=2, groups=2),
    nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),
    nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular"),
]


@pytest.mark.parametrize("conv", CONVS, ids=range(len(CONVS)))
@pytest.mark.parametrize("per_channel", [True, False])
def test_conv_from_float(conv: nn.Conv2d, per_channel: bool) -> None:
    qconv = QuantConv2d.from_float(conv, w_bits=3, per_channel=per_channel)
    assert isinstance(qconv, nn.Conv2d)
    for attr in (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
    ):
        assert getattr(qconv, attr) == getattr(conv, attr), attr
    assert qconv.weight is conv.weight and qconv.bias is conv.bias
    assert qconv.weight_fake_quant.bits == 3 and qconv.weight_fake_quant.per_channel == per_channel
    x = torch.randn(2, 4, 9, 9)
    expected = conv._conv_forward(
        x, fake_quantize_weight(conv.weight, 3, per_channel=per_channel), conv.bias
    )
    assert torch.equal(qconv(x), expected)
    assert not torch.allclose(qconv(x), conv(x))
    qconv.weight_fake_quant.disable_fake_quant()
    assert torch.equal(qconv(x), conv(x))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_from_float(bias: bool) -> None:
    fc = nn.Linear(12, 5, bias=bias)
    qfc = QuantLinear.from_float(fc, w_bits=2, per_channel=True)
    assert isinstance(qfc, nn.Linear)
    assert (qfc.in_features, qfc.out_features) == (12, 5)
    assert qfc.weight is fc.weight and qfc.bias is fc.bias
    x = torch.randn(3, 12)
    assert torch.equal(qfc(x), F.linear(x, fake_quantize_weight(fc.weight, 2), fc.bias))
    qfc.weight_fake_quant.disable_fake_quant()
    assert torch.equal(qfc(x), fc(x))


def test_from_float_keeps_mode_dtype_and_rng() -> None:
    conv = nn.Conv2d(2, 3, 3, dtype=torch.float64).eval()
    fc = nn.Linear(3, 2).train()
    state = torch.get_rng_state()
    qconv = QuantConv2d.from_float(conv, w_bits=4, per_channel=True)
    qfc = QuantLinear.from_float(fc, w_bits=4, per_channel=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert not qconv.training and qfc.training
    assert qconv.weight.dtype == torch.float64
    assert qconv.weight_fake_quant.fake_quant_enabled.device.type == "cpu"
    assert qconv(torch.randn(1, 2, 5, 5, dtype=torch.float64)).dtype == torch.float64


def test_state_dict_keys() -> None:
    qconv = QuantConv2d(2, 3, 3, w_bits=4)
    assert list(qconv.state_dict()) == ["weight", "bias", "weight_fake_quant.fake_quant_enabled"]
    qfc = QuantLinear(3, 2, bias=False, w_bits=4)
    assert list(qfc.state_dict()) == ["weight", "weight_fake_quant.fake_quant_enabled"]


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_straight_through_gradients(layer: str) -> None:
    g = torch.Generator().manual_seed(0)
    q: QuantConv2d | QuantLinear
    if layer == "conv":
        q = QuantConv2d(3, 4, 3, padding=1, w_bits=2)
        x = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    else:
        q = QuantLinear(5, 4, w_bits=2)
        x = torch.randn(2, 5, generator=g, requires_grad=True)
    q(x).square().sum().backward()
    assert q.weight.grad is not None and x.grad is not None
    assert q.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    # Straight-through: the weight's gradient is the gradient w.r.t. its quantized value.
    w_q = fake_quantize_weight(q.weight, 2).detach().requires_grad_(True)
    x_ref = x.detach()
    out = (
        F.conv2d(x_ref, w_q, q.bias, padding=1) if layer == "conv" else F.linear(x_ref, w_q, q.bias)
    )
    out.square().sum().backward()
    assert w_q.grad is not None
    torch.testing.assert_close(q.weight.grad, w_q.grad)


def test_quant_relu_applies_activation_then_quantizer() -> None:
    relu = QuantReLU(nn.ReLU6(), bits=2)
    quantizer = relu.activation_fake_quant
    assert isinstance(quantizer, ActivationFakeQuant)
    quantizer.enable_observer()
    out = relu(torch.tensor([-3.0, 0.5, 2.9, 9.0]))
    # ReLU6 first: [0, 0.5, 2.9, 6]; range [0, 6] with 2 bits: grid {0, 2, 4, 6}.
    assert out.tolist() == [0.0, 0.0, 2.0, 6.0]
    assert quantizer.max_val.item() == 6.0


def test_quant_relu_call_sites() -> None:
    relu = QuantReLU(nn.ReLU(), bits=4, num_sites=2)
    first, second = relu.sites
    assert [name for name, _ in relu.named_children()] == [
        "act",
        "activation_fake_quant",
        "activation_fake_quant_1",
    ]
    for q in relu.sites:
        q.enable_observer()
    relu(torch.tensor([0.0, 1.0]))
    relu(torch.tensor([0.0, 5.0]))
    assert first.max_val.item() == 1.0 and second.max_val.item() == 5.0
    with pytest.raises(RuntimeError, match="num_sites=2"):
        relu(torch.tensor([0.0, 7.0]))
    relu.reset_sites()
    relu(torch.tensor([0.0, 3.0]))
    assert first.max_val.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert second.max_val.item() == 5.0


def test_quant_relu_single_site_is_shared() -> None:
    relu = QuantReLU(nn.ReLU(), bits=4)
    relu.activation_fake_quant.enable_observer()
    for _ in range(3):
        relu(torch.tensor([0.0, 2.0]))
    assert int(relu.activation_fake_quant.num_observed) == 3


@pytest.mark.parametrize("num_sites", [0, -1, 1.5, True])
def test_quant_relu_num_sites_validated(num_sites: int) -> None:
    with pytest.raises(ValueError, match="num_sites must be an integer >= 1"):
        QuantReLU(nn.ReLU(), num_sites=num_sites)
