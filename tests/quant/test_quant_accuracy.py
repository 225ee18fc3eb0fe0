"""End to end: how closely a calibrated student reproduces its full-precision network."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from risloss.models import resnet8, resnet20
from risloss.quant import calibration, quantize_model


def relative_error(model: nn.Module, w_bits: int, a_bits: int) -> float:
    """||Q(x) - F(x)|| / ||F(x)|| on held-out inputs after calibrating on four batches."""
    student = quantize_model(model, w_bits=w_bits, a_bits=a_bits)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        with calibration(student):
            for _ in range(4):
                student(torch.randn(16, 1, 28, 28, generator=g))
        x = torch.randn(32, 1, 28, 28, generator=g)
        reference = model(x)
        return float((student(x) - reference).norm() / reference.norm())


@pytest.mark.parametrize("arch", [resnet8, resnet20], ids=["resnet8", "resnet20"])
def test_w8a8_close_and_w2a2_degraded(arch: Callable[..., nn.Module]) -> None:
    torch.manual_seed(0)
    model = arch(in_channels=1, image_size=28).eval()
    w8a8 = relative_error(model, 8, 8)
    w4a4 = relative_error(model, 4, 4)
    w2a2 = relative_error(model, 2, 2)
    print(f"relative logit error: W8A8 {w8a8:.4f}, W4A4 {w4a4:.4f}, W2A2 {w2a2:.4f}")
    assert w8a8 < 0.05
    assert w8a8 < w4a4 < w2a2
    assert w2a2 > 0.5 and w2a2 > 20 * w8a8
