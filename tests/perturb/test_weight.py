from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models import mobilenet_v2, resnet18

from risloss._stateless import module_state_snapshot, stateless_call
from risloss.models import resnet8
from risloss.perturb import GaussianWeightNoise, WeightPerturbation, by_name, conv_linear_weights

MODES = ("relative", "filter", "absolute")

# Built once: hypothesis runs the property many times.
TINY = nn.Sequential(
    nn.Conv2d(3, 4, 3, padding=1),
    nn.BatchNorm2d(4),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(4, 10),
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_conv_linear_weights(model: nn.Module) -> list[str]:
    names = []
    for module_name, module in model.named_modules():
        if type(module) in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


# ------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: resnet8(),
        lambda: resnet18(num_classes=10),
        lambda: mobilenet_v2(num_classes=10),
    ],
    ids=["resnet8", "resnet18", "mobilenet_v2"],
)
def test_default_selects_conv_and_linear_weights_only(make: Callable[[], nn.Module]) -> None:
    model = make()
    targets = GaussianWeightNoise(0.1).targets(model)
    assert list(targets) == naive_conv_linear_weights(model)
    bn_names = {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if isinstance(m, _BatchNorm)
        for p in ("weight", "bias")
    }
    assert bn_names and not bn_names & set(targets)
    deltas = GaussianWeightNoise(0.1).sample(model, seeded(0))
    assert set(deltas) == set(targets)


def test_conv_subclasses_are_selected() -> None:
    class QuantConv(nn.Conv2d):
        pass

    model = nn.Sequential(QuantConv(1, 2, 3), nn.Conv1d(2, 2, 1), nn.Conv3d(2, 2, 1))
    assert GaussianWeightNoise(0.1).targets(model) == ("0.weight", "1.weight", "2.weight")
    assert not conv_linear_weights("", nn.ConvTranspose2d(1, 1, 1), "weight", torch.zeros(1))


def test_batchnorm_is_never_selected_even_by_a_catch_all() -> None:
    model = resnet8()
    targets = GaussianWeightNoise(0.1, select=by_name("*")).targets(model)
    assert "fc.bias" in targets and "conv1.weight" in targets
    assert not any("bn" in t or "downsample.1" in t for t in targets)
    expected = [n for n, _ in model.named_parameters() if "bn" not in n and "downsample.1" not in n]
    assert list(targets) == expected


def test_by_name_patterns() -> None:
    model = resnet8()
    assert GaussianWeightNoise(0.1, select=by_name("fc.weight")).targets(model) == ("fc.weight",)
    targets = GaussianWeightNoise(0.1, select=by_name(["layer3.*.weight", "conv1.weight"])).targets(
        model
    )
    assert targets == (
        "conv1.weight",
        "layer3.0.conv1.weight",
        "layer3.0.conv2.weight",
        "layer3.0.downsample.0.weight",
    )
    with pytest.raises(ValueError, match="patterns must be"):
        by_name([])
    with pytest.raises(ValueError, match="patterns must be"):
        by_name("")


def test_custom_selector_sees_module_and_names() -> None:
    calls: list[tuple[str, str]] = []

    def select(module_name: str, module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
        calls.append((module_name, param_name))
        return isinstance(module, nn.Linear) and param_name == "bias"

    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    assert GaussianWeightNoise(0.1, select=select).targets(model) == ("0.bias", "2.bias")
    assert ("1", "weight") not in calls  # BatchNorm is skipped before the selector is asked
    assert ("0", "weight") in calls


def test_no_target_lists_the_parameters() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3), nn.LayerNorm(3))
    with pytest.raises(ValueError, match=r"selects no parameter.*0\.weight.*1\.bias"):
        GaussianWeightNoise(0.1).targets(model)
    with pytest.raises(ValueError, match="selects no parameter"):
        GaussianWeightNoise(0.1).sample(model)


def test_tied_weights_are_reported_once() -> None:
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.ReLU(), second)
    assert GaussianWeightNoise(0.1).targets(model) == ("0.weight",)


# ------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_scales_match_the_closed_forms(mode: str) -> None:
    # Replaying the generator with eps=1, mode="absolute" recovers xi exactly.
    model = resnet8()
    eps = 0.07
    deltas = GaussianWeightNoise(eps, mode=mode).sample(model, seeded(0))  # type: ignore[arg-type]
    xis = GaussianWeightNoise(1.0, mode="absolute").sample(model, seeded(0))
    params = dict(model.named_parameters())
    for name, delta in deltas.items():
        w = params[name].detach()
        if mode == "relative":
            scale = w.abs()
        elif mode == "filter":
            scale = torch.stack([w[c].norm() / math.sqrt(w[c].numel()) for c in range(w.shape[0])])
            scale = scale.view(-1, *([1] * (w.dim() - 1)))
        else:
            scale = torch.ones_like(w)
        torch.testing.assert_close(delta, eps * scale * xis[name])


def test_relative_noise_statistics() -> None:
    w = {"w": torch.randn(512, 512, generator=seeded(1))}
    delta = GaussianWeightNoise(0.05, mode="relative").sample(w, seeded(2))["w"]
    ratio = delta / w["w"].abs()
    assert abs(float(ratio.mean())) < 0.05 * 0.01
    assert float(ratio.std()) == pytest.approx(0.05, rel=0.01)


def test_filter_noise_statistics_per_channel() -> None:
    scales = torch.logspace(-2, 1, 16).view(16, 1, 1, 1)
    w = {"w": torch.randn(16, 64, 8, 8, generator=seeded(1)) * scales}
    delta = GaussianWeightNoise(0.1, mode="filter").sample(w, seeded(3))["w"]
    n_c = 64 * 8 * 8
    for c in range(16):
        expected = 0.1 * float(w["w"][c].norm()) / math.sqrt(n_c)
        assert float(delta[c].std()) == pytest.approx(expected, rel=0.05)


def test_absolute_noise_statistics() -> None:
    w = {"w": torch.full((400, 400), 3.0)}
    delta = GaussianWeightNoise(0.2, mode="absolute").sample(w, seeded(0))["w"]
    assert float(delta.std()) == pytest.approx(0.2, rel=0.02)
    assert abs(float(delta.mean())) < 0.005


@given(
    eps=st.floats(0.0, 1.0),
    mode=st.sampled_from(MODES),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_deltas_shape_and_determinism(eps: float, mode: str, shape: list[int], seed: int) -> None:
    w = {"w": torch.randn(shape, generator=seeded(seed + 1))}
    noise = GaussianWeightNoise(eps, mode=mode)  # type: ignore[arg-type]
    first = noise.sample(w, seeded(seed))["w"]
    assert first.shape == w["w"].shape and not first.requires_grad
    assert torch.equal(first, noise.sample(w, seeded(seed))["w"])
    if eps == 0.0:
        assert bool((first == 0).all())


@pytest.mark.parametrize("mode", MODES)
def test_zero_eps_gives_exactly_zero_deltas(mode: str) -> None:
    model = resnet8()
    noise = GaussianWeightNoise(0.0, mode=mode)  # type: ignore[arg-type]
    for delta in noise.sample(model, seeded(0)).values():
        assert bool((delta == 0).all())
    perturbed = noise.perturbed_parameters(model, seeded(0))
    for name, p in model.named_parameters():
        assert torch.equal(perturbed[name], p)


def test_different_seeds_differ_and_global_rng_untouched() -> None:
    model = resnet8()
    noise = GaussianWeightNoise(0.1)
    state = torch.get_rng_state()
    a = noise.sample(model, seeded(0))
    b = noise.sample(model, seeded(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(not torch.equal(a[n], b[n]) for n in a)


# ------------------------------------------------------------------------------------------
# apply, gradients, model state
# ------------------------------------------------------------------------------------------


def test_apply_is_out_of_place_and_keeps_others() -> None:
    model = resnet8()
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    noise = GaussianWeightNoise(0.1)
    deltas = noise.sample(model, seeded(0))
    out = noise.apply(params, deltas)
    assert out is not params and set(out) == set(params)
    for name, p in params.items():
        assert torch.equal(p, before[name])
        if name in deltas:
            assert torch.equal(out[name], p + deltas[name])
        else:
            assert out[name] is p


def test_apply_rejects_unknown_names_and_shapes() -> None:
    noise = GaussianWeightNoise(0.1)
    params = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"not in params; params has: w"):
        noise.apply(params, {"v": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"parameter's shape \(2, 3\)"):
        noise.apply(params, {"w": torch.zeros(3)})


def test_deltas_carry_no_graph_and_perturbed_weights_keep_it() -> None:
    model = nn.Linear(3, 2)
    noise = GaussianWeightNoise(0.1)
    deltas = noise.sample(model, seeded(0))
    assert not deltas["weight"].requires_grad and deltas["weight"].grad_fn is None
    params = noise.perturbed_parameters(model, seeded(0))
    assert params["weight"].requires_grad
    stateless_call(model, params, (torch.randn(4, 3),)).sum().backward()
    assert model.weight.grad is not None  # W + delta keeps W's graph ...
    frozen = nn.Linear(3, 2).requires_grad_(False)  # ... so a frozen teacher gets no gradient
    x = torch.randn(4, 3, requires_grad=True)
    stateless_call(frozen, noise.perturbed_parameters(frozen, seeded(0)), (x,)).sum().backward()
    assert frozen.weight.grad is None and x.grad is not None


@given(seed=st.integers(0, 2**16), mode=st.sampled_from(MODES), eps=st.floats(0.0, 0.5))
def test_model_state_unchanged_after_perturbed_calls(seed: int, mode: str, eps: float) -> None:
    model = TINY.eval()
    before = module_state_snapshot(model)
    noise = GaussianWeightNoise(eps, mode=mode)  # type: ignore[arg-type]
    x = torch.randn(2, 3, 8, 8, generator=seeded(seed))
    out = stateless_call(model, noise.perturbed_parameters(model, seeded(seed)), (x,))
    assert out.shape == (2, 10)
    assert module_state_snapshot(model).differences(before) == []


def test_perturbed_call_changes_the_output() -> None:
    model = resnet8().eval()
    x = torch.randn(2, 3, 32, 32, generator=seeded(0))
    clean = model(x)
    noisy = stateless_call(
        model, GaussianWeightNoise(0.1).perturbed_parameters(model, seeded(0)), (x,)
    )
    assert not torch.allclose(clean, noisy)


def test_mapping_source_perturbs_every_entry() -> None:
    w = {"a": torch.ones(3), "b": torch.ones(2, 2)}
    deltas = GaussianWeightNoise(0.1).sample(w, seeded(0))
    assert set(deltas) == {"a", "b"} and all(bool((d != 0).all()) for d in deltas.values())
    with pytest.raises(ValueError, match="at least one tensor"):
        GaussianWeightNoise(0.1).sample({})


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


def test_configuration_is_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match=r"^eps must be a finite number >= 0"):
        GaussianWeightNoise(-0.1)
    with pytest.raises(ValueError, match=r"^eps must"):
        GaussianWeightNoise(float("nan"))
    with pytest.raises(TypeError, match="eps"):
        GaussianWeightNoise("0.1")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^mode must be one of \('relative', 'filter', 'absolute'\)"
    ):
        GaussianWeightNoise(0.1, mode="layer")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="select must be callable"):
        GaussianWeightNoise(0.1, select="conv")  # type: ignore[arg-type]
    noise = GaussianWeightNoise(0.1)
    with pytest.raises(AttributeError):
        noise.eps = 0.2  # type: ignore[misc]
    assert isinstance(noise, WeightPerturbation)
    assert noise == GaussianWeightNoise(0.1, mode="relative")
    assert "eps=0.1" in repr(noise)
