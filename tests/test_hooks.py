from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models import mobilenet_v2

from risloss._stateless import module_state_snapshot, stateless_call
from risloss.functional import BNStatistics
from risloss.hooks import (
    PENULTIMATE,
    BNStatisticsCollector,
    FeatureStore,
    capture_bn_statistics,
    capture_features,
    resolve_layers,
)
from risloss.models import resnet8
from risloss.perturb import GaussianWeightNoise


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2))


RESNET = resnet8(image_size=16).eval()  # built once; tests leave it unchanged


# ------------------------------------------------------------------------------------------
# resolve_layers
# ------------------------------------------------------------------------------------------


def test_resolve_names_patterns_and_penultimate() -> None:
    assert resolve_layers(RESNET, "fc") == (("fc", "output"),)
    assert resolve_layers(RESNET, PENULTIMATE) == (("fc", "input"),)
    assert resolve_layers(RESNET, ["layer1.0.bn1", "layer*.0.conv2"], kind="input") == (
        ("layer1.0.bn1", "input"),
        ("layer1.0.conv2", "input"),
        ("layer2.0.conv2", "input"),
        ("layer3.0.conv2", "input"),
    )
    assert resolve_layers(RESNET, {"avgpool": "output", "layer3.0.relu?": "input"}) == (
        ("avgpool", "output"),
        ("layer3.0.relu1", "input"),
        ("layer3.0.relu2", "input"),
    )
    # duplicates are merged, selection order is kept
    assert resolve_layers(RESNET, ["fc", "f?", "avgpool"]) == (
        ("fc", "output"),
        ("avgpool", "output"),
    )


def test_penultimate_is_the_last_linear_in_registration_order() -> None:
    model = mlp()
    assert resolve_layers(model, PENULTIMATE) == (("4", "input"),)
    with pytest.raises(ValueError, match=r"has no nn\.Linear"):
        resolve_layers(nn.Sequential(nn.Conv2d(1, 1, 1)), PENULTIMATE)
    with pytest.raises(ValueError, match="kind must be 'input'"):
        resolve_layers(model, {PENULTIMATE: "output"})


def test_unknown_layer_lists_the_modules() -> None:
    with pytest.raises(
        ValueError, match=r"'layer4' matches no module of CifarResNet.*'conv1', 'bn1'"
    ):
        resolve_layers(RESNET, ["fc", "layer4"])
    with pytest.raises(ValueError, match=r"'block\*' matches no module"):
        resolve_layers(RESNET, "block*")


def test_listing_is_truncated_for_huge_models() -> None:
    model = nn.Sequential(*[nn.Identity() for _ in range(500)])
    with pytest.raises(ValueError, match=r"\.\.\. \(440 more\)$"):
        resolve_layers(model, "nope")


def test_conflicting_kinds_and_bad_kinds_raise() -> None:
    with pytest.raises(ValueError, match="both as 'output' and as 'input'"):
        resolve_layers(RESNET, ["fc", PENULTIMATE])
    with pytest.raises(ValueError, match=r"^kind must be one of \('output', 'input'\)"):
        resolve_layers(RESNET, "fc", kind="grad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kind of layer 'fc' must be one of"):
        resolve_layers(RESNET, {"fc": "both"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one layer"):
        resolve_layers(RESNET, [])


# ------------------------------------------------------------------------------------------
# capture_features
# ------------------------------------------------------------------------------------------


def test_captured_values_match_a_manual_forward() -> None:
    model = mlp()
    x = torch.randn(6, 4, generator=seeded(0))
    with capture_features(model, {"0": "output", "2": "input", PENULTIMATE: "input"}) as feats:
        out = model(x)
    h0 = model[0](x)
    h2 = model[2](model[1](h0))
    assert torch.equal(feats["0"], h0)
    assert torch.equal(feats["2"], model[1](h0))
    assert torch.equal(feats[PENULTIMATE], model[3](h2)) and feats[PENULTIMATE] is feats["4"]
    assert torch.equal(out, model[4](feats["4"]))
    assert list(feats) == ["0", "2", "4"] and len(feats) == 3
    assert isinstance(feats, FeatureStore)


def test_penultimate_of_resnet8_is_the_pooled_feature() -> None:
    x = torch.randn(2, 3, 16, 16, generator=seeded(0))
    with capture_features(RESNET, PENULTIMATE) as feats:
        RESNET(x)
    m = RESNET
    h = m.relu(m.bn1(m.conv1(x)))
    h = m.layer3(m.layer2(m.layer1(h)))
    torch.testing.assert_close(feats[PENULTIMATE], h.mean(dim=(2, 3)))


def test_latest_forward_wins_and_clear_forgets() -> None:
    model = mlp()
    with capture_features(model, "0") as feats:
        with pytest.raises(KeyError, match="has not run"):
            feats["0"]
        model(torch.zeros(1, 4))
        model(torch.ones(1, 4))
        assert torch.equal(feats["0"], model[0](torch.ones(1, 4)))
        feats.clear()
        assert len(feats) == 0 and list(feats) == []
        with pytest.raises(KeyError, match="is not captured"):
            feats["1"]


def test_shared_module_keeps_its_last_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x))

    model = Twice()
    x = torch.randn(2, 3)
    with capture_features(model, "lin") as feats:
        out = model(x)
    assert torch.equal(feats["lin"], out)


def test_detach_option() -> None:
    model = mlp()
    x = torch.randn(2, 4)
    with capture_features(model, "0") as attached:
        model(x)
    with capture_features(model, "0", detach=True) as detached:
        model(x)
    assert attached["0"].requires_grad and not detached["0"].requires_grad
    assert torch.equal(attached["0"], detached["0"])


def test_gradients_flow_through_captured_features() -> None:
    model = mlp().requires_grad_(False)
    x = torch.randn(2, 4, requires_grad=True)
    with capture_features(model, PENULTIMATE) as feats:
        model(x)
    feats[PENULTIMATE].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_capture_under_functional_call_sees_substituted_weights() -> None:
    x = torch.randn(2, 3, 16, 16, generator=seeded(0))
    before = module_state_snapshot(RESNET)
    with capture_features(RESNET, [PENULTIMATE, "layer2.0.relu1"]) as feats:
        RESNET(x)
        clean = dict(feats)
        stateless_call(RESNET, None, (x,))
        same = dict(feats)
        params = GaussianWeightNoise(0.1).perturbed_parameters(RESNET, seeded(1))
        stateless_call(RESNET, params, (x,))
        perturbed = dict(feats)
    for name in ("fc", "layer2.0.relu1"):
        torch.testing.assert_close(same[name], clean[name])
        assert not torch.allclose(perturbed[name], clean[name])
    assert hook_count(RESNET) == 0
    assert module_state_snapshot(RESNET).differences(before) == []


@given(layers=st.sampled_from(["fc", PENULTIMATE, "layer*", ["bn1", "layer1.0.conv1"]]))
def test_hooks_removed_on_normal_exit(layers: str | list[str]) -> None:
    with capture_features(RESNET, layers):
        assert hook_count(RESNET) > 0
        RESNET(torch.randn(1, 3, 16, 16))
    assert hook_count(RESNET) == 0


def test_hooks_removed_when_the_forward_raises() -> None:
    with pytest.raises(RuntimeError):
        with capture_features(RESNET, ["layer*", PENULTIMATE]):
            RESNET(torch.randn(1, 5, 16, 16))  # wrong number of channels
    assert hook_count(RESNET) == 0
    with pytest.raises(KeyError):
        with capture_features(RESNET, "fc"):
            raise KeyError("body")
    assert hook_count(RESNET) == 0


def test_invalid_selection_registers_nothing() -> None:
    with pytest.raises(ValueError):
        with capture_features(RESNET, ["fc", "missing"]):
            pass
    assert hook_count(RESNET) == 0


def test_non_tensor_output_raises_type_error() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    model = nn.Sequential(Pair())
    with pytest.raises(TypeError, match="returned a tuple"):
        with capture_features(model, "0"):
            model(torch.zeros(1))
    assert hook_count(model) == 0


# ------------------------------------------------------------------------------------------
# capture_bn_statistics
# ------------------------------------------------------------------------------------------


def naive_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance with explicit loops over channels."""
    means, variances = [], []
    for c in range(x.shape[1]):
        values = x[:, c].reshape(-1).double()
        mean = values.sum() / values.numel()
        means.append(mean)
        variances.append(((values - mean) ** 2).sum() / values.numel())
    return torch.stack(means).to(x.dtype), torch.stack(variances).to(x.dtype)


def bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_bn_statistics_match_a_naive_computation() -> None:
    x = torch.randn(4, 3, 16, 16, generator=seeded(0))
    names = bn_names(RESNET)
    with (
        capture_bn_statistics(RESNET) as collector,
        capture_features(RESNET, names, kind="input") as inputs,
    ):
        RESNET(x)
    stats = collector.statistics()
    assert isinstance(stats, BNStatistics) and isinstance(collector, BNStatisticsCollector)
    assert list(stats.names) == names and len(stats) == 9
    modules = dict(RESNET.named_modules())
    for i, name in enumerate(stats.names):
        mean, var = naive_moments(inputs[name])
        torch.testing.assert_close(stats.batch_means[i], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats.batch_vars[i], var, rtol=1e-5, atol=1e-6)
        assert torch.equal(stats.running_means[i], modules[name].running_mean)
        assert torch.equal(stats.running_vars[i], modules[name].running_var)
    assert hook_count(RESNET) == 0


def test_bn_statistics_of_1d_inputs() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.Flatten(0, 0))
    model.add_module("seq_bn", nn.BatchNorm1d(2))
    x = torch.randn(7, 3, generator=seeded(0))
    with capture_bn_statistics(model) as collector:
        model(x)
    stats = collector.statistics()
    h = model[0](x)
    mean, var = naive_moments(h)
    torch.testing.assert_close(stats.batch_means[0], mean)
    torch.testing.assert_close(stats.batch_vars[0], var)
    assert stats.names == ("1", "seq_bn")


def test_bn_statistics_carry_gradients_to_the_input() -> None:
    model = resnet8(image_size=8).eval().requires_grad_(False)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with capture_bn_statistics(model) as collector:
        model(x)
    stats = collector.statistics()
    sum(
        m.sum() + v.sum() for m, v in zip(stats.batch_means, stats.batch_vars, strict=True)
    ).backward()  # type: ignore[union-attr]
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(r.requires_grad for r in stats.running_means)


def test_bn_statistics_see_substituted_buffers() -> None:
    x = torch.randn(2, 3, 16, 16, generator=seeded(0))
    buffers = {"layer2.0.bn1.running_mean": torch.full((32,), 7.0)}
    with capture_bn_statistics(RESNET, "layer2.0.bn1") as collector:
        stateless_call(RESNET, None, (x,), buffers=buffers)
        substituted = collector.statistics()
        RESNET(x)
        own = collector.statistics()
    assert torch.equal(substituted.running_means[0], torch.full((32,), 7.0))
    assert torch.equal(own.running_means[0], RESNET.layer2[0].bn1.running_mean)


def test_bn_running_statistics_are_read_before_a_train_mode_update() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2)).train()
    before = model[0].running_mean.clone()
    with capture_bn_statistics(model) as collector:
        model(torch.randn(4, 2, 3, 3) + 5.0)
    assert torch.equal(collector.statistics().running_means[0], before)
    assert not torch.equal(model[0].running_mean, before)


def test_bn_statistics_follow_the_latest_run_order() -> None:
    class Swap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
            self.reverse = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(self.b(x)) if self.reverse else self.b(self.a(x))

    model = Swap().eval()
    with capture_bn_statistics(model) as collector:
        model(torch.randn(3, 2))
        assert collector.statistics().names == ("a", "b")
        model.reverse = True
        model(torch.randn(3, 2))
        assert collector.statistics().names == ("b", "a")


def test_bn_selection_and_errors() -> None:
    with capture_bn_statistics(RESNET, ["layer*.bn2", "bn1"]) as collector:
        assert collector.names == ("layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2", "bn1")
        with pytest.raises(RuntimeError, match="have not run"):
            collector.statistics()
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        with capture_bn_statistics(mlp()):
            pass
    with pytest.raises(ValueError, match=r"is a Conv2d, not BatchNorm.*'bn1'"):
        with capture_bn_statistics(RESNET, "conv1"):
            pass
    with pytest.raises(ValueError, match=r"pattern 'fc\*' matches no BatchNorm module"):
        with capture_bn_statistics(RESNET, "fc*"):
            pass
    with pytest.raises(ValueError, match="matches no module"):
        with capture_bn_statistics(RESNET, "bn9"):
            pass
    untracked = nn.Sequential(nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="no BatchNorm layer with running statistics"):
        with capture_bn_statistics(untracked):
            pass
    with pytest.raises(ValueError, match="tracks no running statistics"):
        with capture_bn_statistics(untracked, "0"):
            pass
    assert hook_count(RESNET) == 0


def test_bn_hooks_removed_when_the_forward_raises() -> None:
    model = mobilenet_v2(num_classes=10).eval()
    with pytest.raises(RuntimeError):
        with capture_bn_statistics(model) as collector:
            assert hook_count(model) == len(bn_names(model)) == len(collector.names)
            model(torch.randn(1, 4, 32, 32))
    assert hook_count(model) == 0


def test_capture_features_accepts_an_empty_selection() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for empty in ([], {}):
        with capture_features(model, empty) as feats:
            model(torch.randn(2, 4))
        assert len(feats) == 0 and list(feats) == []
    assert not model._forward_hooks and not model[0]._forward_hooks
