from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from risloss.models import resnet8
from risloss.pruning import finalize_pruning, model_stats, prune_model, sparsity
from risloss.quant import quantize_model, quantized_layers

SHAPE = (1, 28, 28)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet8(in_channels=1).eval()


def _tiny() -> nn.Module:
    """Conv2d(1, 3, 3) on 6x6 -> (3, 4, 4) -> Linear(48, 5): 432 + 240 MACs, 275 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


# Unstructured pruning --------------------------------------------------------------------------


def test_unstructured_matches_global_magnitude_reference() -> None:
    net = _net()
    pruned = prune_model(net, sparsity=0.3)
    flat = torch.cat([w.detach().abs().flatten() for w in _weights(net)])
    k = round(0.3 * flat.numel())
    reference = torch.ones_like(flat)
    reference[flat.argsort()[:k]] = 0.0  # the k smallest magnitudes of all layers together
    layers: list[Any] = [m for m in pruned.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    masks = [m.weight_mask for m in layers]
    assert torch.equal(torch.cat([m.flatten() for m in masks]), reference)
    assert sparsity(pruned) == k / flat.numel()
    assert sparsity(net) == 0.0  # the original is untouched (a copy was pruned)


@given(st.floats(min_value=0.0, max_value=0.99))
def test_unstructured_sparsity_is_exact(amount: float) -> None:
    net = _tiny()
    total = sum(w.numel() for w in _weights(net))
    assert sparsity(prune_model(net, sparsity=amount)) == round(amount * total) / total


def test_masks_persist_through_optimizer_steps() -> None:
    pruned = prune_model(_net(), sparsity=0.6)
    pruned.train()
    before = {n: p.detach().clone() for n, p in pruned.named_parameters()}
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        opt.zero_grad()
        pruned(x).square().mean().backward()
        opt.step()
    pruned(x)  # the pruning pre-hook recomputes weight = weight_orig * weight_mask
    moved = [n for n, p in pruned.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.endswith("weight_orig") for n in moved)
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert bool((m.weight[m.weight_mask == 0] == 0).all())
    assert sparsity(pruned) == pytest.approx(0.6, abs=1e-4)


def test_finalize_pruning_removes_reparametrization() -> None:
    pruned = prune_model(_net(), sparsity=0.5)
    x = torch.randn(2, *SHAPE)
    expected = pruned(x)
    out = finalize_pruning(pruned)
    assert out is pruned
    assert not prune.is_pruned(pruned)
    keys = pruned.state_dict().keys()
    assert not any(k.endswith(("weight_orig", "weight_mask")) for k in keys)
    assert all(isinstance(w, nn.Parameter) for w in _weights(pruned))
    assert torch.equal(pruned(x), expected)
    assert sparsity(pruned) == pytest.approx(0.5, abs=1e-4)
    resnet8(in_channels=1).load_state_dict(pruned.state_dict())  # plain weights again


def test_zero_sparsity_keeps_every_weight() -> None:
    net = _net()
    pruned = prune_model(net, sparsity=0.0)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(pruned(x), net(x))
    assert sparsity(pruned) == 0.0


# Structured pruning ----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.9])
def test_structured_really_shrinks_blocks(amount: float) -> None:
    net = _net()
    pruned = prune_model(net, sparsity=amount, structured=True)
    blocks = [(n, b) for n, b in net.named_modules() if hasattr(b, "conv1") and n]
    assert blocks
    small = dict(pruned.named_modules())
    for name, block in blocks:
        n = block.conv1.out_channels
        keep = max(1, n - round(amount * n))
        b = small[name]
        assert b.conv1.weight.shape == (keep, *block.conv1.weight.shape[1:])
        assert b.conv1.out_channels == b.bn1.num_features == b.conv2.in_channels == keep
        assert b.bn1.running_mean.shape == (keep,)
        assert b.conv2.weight.shape[1] == keep
        assert b.conv2.out_channels == block.conv2.out_channels  # block outputs are kept
        # Reference: the kept filters are those with the largest L1 norms, in order.
        norms = block.conv1.weight.detach().abs().flatten(1).sum(1)
        idx = norms.argsort(descending=True)[:keep].sort().values
        assert torch.equal(b.conv1.weight, block.conv1.weight[idx])
        assert torch.equal(b.conv2.weight, block.conv2.weight[:, idx])
    x = torch.randn(3, *SHAPE)
    assert pruned(x).shape == net(x).shape == (3, 10)


def test_structured_prunes_deterministically() -> None:
    net = _net()
    a = prune_model(net, sparsity=0.5, structured=True).state_dict()
    b = prune_model(net, sparsity=0.5, structured=True).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# Statistics ------------------------------------------------------------------------------------


def test_model_stats_closed_form() -> None:
    net = _tiny()
    stats = model_stats(net, (1, 6, 6))
    assert stats == {
        "params": 275,
        "nonzero_params": 275,
        "macs": 432.0 + 240.0,
        "effective_macs": 432.0 + 240.0,
        "sparsity": 0.0,
    }
    pruned: Any = prune_model(net, sparsity=0.5)
    conv, lin = pruned[0], pruned[3]
    d_conv = int(conv.weight_mask.sum()) / 27
    d_lin = int(lin.weight_mask.sum()) / 240
    zeros = int((conv.weight_mask == 0).sum() + (lin.weight_mask == 0).sum())
    stats = model_stats(pruned, (1, 6, 6))
    assert stats["params"] == 275  # weight_orig stands for the pruned weight
    assert stats["nonzero_params"] == 275 - zeros
    assert stats["macs"] == 672.0
    assert math.isclose(stats["effective_macs"], 432.0 * d_conv + 240.0 * d_lin)
    assert stats["sparsity"] == zeros / 267


@pytest.mark.parametrize("structured", [False, True])
def test_model_stats_decrease(structured: bool) -> None:
    net = _net()
    before = model_stats(net, SHAPE)
    after = model_stats(prune_model(net, sparsity=0.5, structured=structured), SHAPE)
    assert after["nonzero_params"] < before["nonzero_params"]
    assert after["effective_macs"] < before["effective_macs"]
    if structured:
        assert after["params"] < before["params"]
        assert after["macs"] < before["macs"]
    else:
        assert after["macs"] == before["macs"]
        assert after["sparsity"] > before["sparsity"] == 0.0


def test_model_stats_restores_mode() -> None:
    net = _net().train()
    model_stats(net, SHAPE)
    assert net.training


# Composition with quantization -----------------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True])
def test_prune_and_quantize_compose(structured: bool) -> None:
    quantized: Any = quantize_model(_net(), w_bits=4, a_bits=4)
    pruned: Any = prune_model(quantized, sparsity=0.5, structured=structured)
    assert len(quantized_layers(pruned)) == len(quantized_layers(quantized))
    x = torch.randn(2, *SHAPE)
    assert pruned(x).shape == (2, 10)
    if structured:
        assert pruned.layer1[0].conv1.out_channels < quantized.layer1[0].conv1.out_channels
        return
    assert sparsity(pruned) == pytest.approx(0.5, abs=1e-4)
    for layer in quantized_layers(pruned).values():
        # The fake-quantized weight is exactly zero where the mask removed a weight.
        effective = layer.weight_fake_quant(layer.weight)
        assert bool((effective[layer.weight_mask == 0] == 0).all())
    expected = pruned(x)
    plain = finalize_pruning(pruned)
    rebuilt = quantize_model(_net(), w_bits=4, a_bits=4)
    rebuilt.load_state_dict(plain.state_dict())  # same structure once the masks are permanent
    assert torch.equal(rebuilt(x), expected)


# Bad configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("structured", [False, True])
def test_bad_sparsity_raises(amount: float, structured: bool) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune_model(_tiny(), sparsity=amount, structured=structured)


def test_structured_needs_residual_blocks() -> None:
    with pytest.raises(ValueError, match="structured"):
        prune_model(_tiny(), sparsity=0.5, structured=True)


def test_model_without_prunable_layers() -> None:
    with pytest.raises(ValueError, match="no Conv or Linear"):
        prune_model(nn.Sequential(nn.ReLU()), sparsity=0.5)
    with pytest.raises(ValueError, match="no Conv or Linear"):
        sparsity(nn.Sequential(nn.ReLU()))
