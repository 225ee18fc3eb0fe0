from __future__ import annotations

import pytest
import torch
from torch import nn

from risloss.models import Generator, resnet8, resnet20


@pytest.mark.parametrize(("factory", "params"), [(resnet20, 272_474), (resnet8, 78_042)])
def test_resnet_parameter_counts_and_shapes(factory, params) -> None:
    model = factory(num_classes=10, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gray = factory(num_classes=7, in_channels=1, image_size=28)
    assert gray(torch.randn(3, 1, 28, 28)).shape == (3, 7)


def test_every_relu_is_its_own_module() -> None:
    model = resnet20()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 1 + 2 * 9


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        resnet20(num_classes=0)
    with pytest.raises(ValueError, match="image_size must be divisible by 4"):
        Generator(image_size=30)


def test_generator_hard_and_soft_labels() -> None:
    torch.manual_seed(0)
    g = Generator(num_classes=10, image_size=28, channels=1, latent_dim=16)
    z = torch.randn(6, 16)
    hard = torch.tensor([0, 1, 2, 3, 4, 5])
    soft = torch.nn.functional.one_hot(hard, 10).float()
    # One-hot soft labels embed exactly like hard labels.
    assert torch.allclose(g(z, hard), g(z, soft), atol=1e-5)
    out = g(z, hard)
    assert out.shape == (6, 1, 28, 28)
    # The final affine-free BatchNorm standardizes each channel over the batch (train mode).
    assert abs(float(out.detach().mean())) < 1e-4
    with pytest.raises(ValueError, match="soft labels"):
        g(z, torch.rand(6, 3))
    with pytest.raises(ValueError, match="same batch size"):
        g(z, hard[:3])
