"""RobustnessLoss: the value, the teacher left untouched, the cost, the configuration."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.models import mobilenet_v2, resnet18

from risloss._stateless import module_state_snapshot
from risloss.functional import DIVERGENCE_KINDS, FEATURE_KINDS, NonFiniteInputError
from risloss.hooks import capture_features
from risloss.losses import RobustnessLoss, noise_threshold
from risloss.models import resnet8
from risloss.perturb import (
    GaussianNoise,
    GaussianWeightNoise,
    InputPerturbation,
    NoiseParams,
    by_name,
)
from risloss.quant import calibration, freeze, quantize_model

MODES = ("random", "joint", "input", "weight")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_teacher(train: bool = False, seed: int = 0) -> nn.Module:
    """A resnet8 for 1x16x16 images with non-trivial BatchNorm running statistics."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = resnet8(in_channels=1, image_size=16)
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, 1, 16, 16))
    return model.train(train).requires_grad_(False)


def images(batch: int = 4, seed: int = 1, side: int = 16, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, side, side, generator=seeded(seed)).requires_grad_()


def hooks_left(model: nn.Module) -> list[str]:
    """Names of the modules that hold a forward hook or pre-hook."""
    return [
        name
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or m._forward_hooks_with_kwargs
    ]


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Assert on exit that ``model``'s state, flags and hooks are as on entry."""
    before = module_state_snapshot(model)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    params = {n: p for n, p in model.named_parameters()}
    assert hooks_left(model) == []
    try:
        yield
    finally:
        assert module_state_snapshot(model).differences(before) == []
        assert {n: p.requires_grad for n, p in model.named_parameters()} == requires_grad
        assert all(p is params[n] for n, p in model.named_parameters())
        assert hooks_left(model) == []


class Broken(InputPerturbation[NoiseParams]):
    """A perturbation that fails: by raising, or by returning images the model cannot take."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> NoiseParams:
        return NoiseParams(noise=torch.zeros_like(x))

    def transform(self, x: torch.Tensor, params: NoiseParams) -> torch.Tensor:
        if self.how == "raise":
            raise RuntimeError("perturbation failed")
        return x.repeat(1, 2, 1, 1)  # two channels: the stem convolution fails mid-forward


class Counting(InputPerturbation[NoiseParams]):
    """Gaussian noise that counts its draws."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.noise = GaussianNoise(std)
        self.calls = 0

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> NoiseParams:
        self.calls += 1
        return self.noise.sample(x, generator)

    def transform(self, x: torch.Tensor, params: NoiseParams) -> torch.Tensor:
        return self.noise.transform(x, params)


# --------------------------------------------------------------------------------------------
# Value
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_distance", FEATURE_KINDS)
@pytest.mark.parametrize("prediction_distance", DIVERGENCE_KINDS)
def test_zero_perturbation_gives_zero_and_real_perturbation_positive(
    feature_distance: Any, prediction_distance: Any
) -> None:
    teacher = make_teacher()
    x = images()

    def loss(std: float, eps: float) -> dict[str, torch.Tensor]:
        rob = RobustnessLoss(
            teacher,
            input_perturbation=GaussianNoise(std=std),
            weight_perturbation=GaussianWeightNoise(eps=eps),
            mode="joint",
            feature_distance=feature_distance,
            prediction_distance=prediction_distance,
            generator=seeded(0),
        )
        out: dict[str, torch.Tensor] = rob.parts(x).as_dict()
        return out

    zero = loss(0.0, 0.0)
    assert abs(zero["loss"].item()) <= 1e-6
    assert zero["per_sample"].abs().max().item() <= 1e-6
    real = loss(0.5, 0.2)
    assert real["loss"].item() > 1e-6
    assert bool((real["per_sample"] > 0).all())


def reference_loss(
    teacher: nn.Module,
    x: torch.Tensor,
    *,
    mode: str,
    seed: int,
    num_draws: int,
    threshold: float,
    temperature: float = 1.0,
    std: float = 0.3,
    eps: float = 0.1,
) -> torch.Tensor:
    """The RIS objective written out plainly: cosine features at fc's input, L1 predictions."""
    g = seeded(seed)
    noise = GaussianWeightNoise(eps=eps)
    feats: dict[str, torch.Tensor] = {}

    def run(inp: torch.Tensor, params: dict[str, torch.Tensor] | None) -> torch.Tensor:
        def grab(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            feats["fc"] = args[0]

        handle = teacher.fc.register_forward_pre_hook(grab)
        try:
            if params is None:
                return teacher(inp)
            state = {**dict(teacher.named_parameters()), **params}
            return torch.func.functional_call(teacher, state, (inp,))
        finally:
            handle.remove()

    clean = run(x, None)
    clean_f = feats["fc"]
    total = torch.zeros(x.shape[0])
    for _ in range(num_draws):
        x_d = x + std * torch.randn(x.shape, generator=g) if mode == "input" else x
        params = None
        if mode == "weight":
            deltas = noise.sample(teacher, g)
            params = {n: p + deltas[n] for n, p in teacher.named_parameters() if n in deltas}
        logits = run(x_d, params)
        per_sample = []
        for i in range(x.shape[0]):
            cos = F.cosine_similarity(clean_f[i], feats["fc"][i], dim=0)
            p, q = (clean[i] / temperature).softmax(-1), (logits[i] / temperature).softmax(-1)
            l1 = (p - q).abs().sum()
            per_sample.append(torch.clamp((1 - cos) + l1 - threshold, min=0))
        total = total + torch.stack(per_sample)
    return (total / num_draws).mean()


@pytest.mark.parametrize("mode", ["input", "weight"])
@pytest.mark.parametrize(("threshold", "temperature"), [(0.0, 1.0), (0.02, 1.0), (0.0, 4.0)])
def test_matches_a_plain_reference(mode: Any, threshold: float, temperature: float) -> None:
    teacher = make_teacher()
    x = images(batch=5)
    rob = RobustnessLoss(
        teacher,
        input_perturbation=GaussianNoise(std=0.3),
        weight_perturbation=GaussianWeightNoise(eps=0.1),
        mode=mode,
        num_draws=2,
        threshold=threshold,
        temperature=temperature,
        generator=seeded(7),
    )
    expected = reference_loss(
        teacher,
        x,
        mode=mode,
        seed=7,
        num_draws=2,
        threshold=threshold,
        temperature=temperature,
    )
    torch.testing.assert_close(rob(x), expected, rtol=1e-5, atol=1e-6)


def test_feature_term_is_the_mean_over_layers() -> None:
    teacher = make_teacher()
    x = images()

    def per_sample(layers: list[str]) -> torch.Tensor:
        rob = RobustnessLoss(
            teacher,
            input_perturbation=GaussianNoise(0.3),
            weight_perturbation=None,
            mode="input",
            feature_layers=layers,
            prediction_weight=0.0,
            generator=seeded(5),
        )
        out: torch.Tensor = rob.parts(x).per_sample.detach()
        return out

    both = per_sample(["layer1", "layer3"])
    torch.testing.assert_close(both, (per_sample(["layer1"]) + per_sample(["layer3"])) / 2)


def test_weight_perturbation_touches_only_its_targets() -> None:
    teacher = make_teacher()
    x = images()
    rob = RobustnessLoss(
        teacher,
        weight_perturbation=GaussianWeightNoise(0.2, select=by_name("fc.weight")),
        mode="weight",
        generator=seeded(0),
    )
    parts = rob.parts(x)
    # Only the classifier is perturbed: its input (the compared feature) does not move.
    assert parts.feature.item() == 0.0 and parts.prediction.item() > 0
    rob.weight_perturbation = GaussianWeightNoise(0.2, select=by_name("layer3.*"))
    assert rob.parts(x).feature.item() > 0


def test_random_mode_draws_both_kinds() -> None:
    teacher = make_teacher()
    counting = Counting(std=0.2)
    rob = RobustnessLoss(teacher, input_perturbation=counting, num_draws=16, generator=seeded(3))
    assert rob.weight_perturbation is not None
    rob(images())
    assert 0 < counting.calls < 16


def test_parts_record_and_deprecated_return_parts() -> None:
    teacher = make_teacher()
    x = images(batch=6)
    parts = RobustnessLoss(teacher, num_draws=2, generator=seeded(0)).parts(x)
    assert parts.loss.shape == () and parts.feature.shape == ()
    assert parts.prediction.shape == () and parts.per_sample.shape == (6,)
    assert parts.inconsistency.shape == () and float(parts.inconsistency) > 0
    torch.testing.assert_close(parts.loss, parts.per_sample.mean())
    # The scalar call returns the same loss for the same draws.
    scalar = RobustnessLoss(teacher, num_draws=2, generator=seeded(0))(x)
    assert isinstance(scalar, torch.Tensor) and torch.equal(scalar, parts.loss)
    # The dict of earlier versions still comes back, with a deprecation warning.
    with pytest.warns(DeprecationWarning, match=r"loss\.parts"):
        old = RobustnessLoss(teacher, num_draws=2, generator=seeded(0))(x, return_parts=True)
    assert set(old) == {"loss", "feature", "prediction", "per_sample"}
    assert torch.equal(old["per_sample"], parts.per_sample)


def test_loss_module_holds_no_teacher_state() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, input_perturbation=GaussianNoise(0.1))
    assert rob.model is teacher
    assert rob.state_dict() == {}
    assert list(rob.parameters()) == []
    assert "teacher" not in dict(rob.named_children()) and "model" not in dict(rob.named_children())


# --------------------------------------------------------------------------------------------
# The teacher is never changed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reuse", [False, True], ids=["full", "reuse-clean"])
def test_teacher_is_unchanged_by_forward_and_backward(train: bool, mode: Any, reuse: bool) -> None:
    teacher = make_teacher(train=train)
    teacher.requires_grad_(True)  # even so, nothing reaches the teacher's parameters
    rob = RobustnessLoss(teacher, mode=mode, num_draws=2, generator=seeded(0))
    x = images()
    kwargs: dict[str, Any] = {}
    if reuse:
        with torch.no_grad(), capture_features(teacher, rob.feature_layers) as feats:
            logits = teacher(x)  # the caller's pass may change the teacher (train mode): not ours
        kwargs = {"clean_logits": logits, "clean_features": dict(feats)}
    with untouched(teacher):
        loss = rob(x, **kwargs)
        loss.backward()
    assert teacher.training is train
    assert all(p.grad is None for p in teacher.parameters())
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def bad_calls() -> list[tuple[str, Any]]:
    def nan_x(rob: RobustnessLoss, x: torch.Tensor) -> None:
        rob(x.detach().clone().index_fill_(0, torch.tensor([1]), float("nan")))

    def short_logits(rob: RobustnessLoss, x: torch.Tensor) -> None:
        rob(x, clean_logits=torch.zeros(x.shape[0] - 1, 10), clean_features={})

    def inf_logits(rob: RobustnessLoss, x: torch.Tensor) -> None:
        logits = torch.zeros(x.shape[0], 10)
        logits[0, 3] = float("inf")
        rob(x, clean_logits=logits, clean_features={"fc": torch.zeros(x.shape[0], 64)})

    def no_features(rob: RobustnessLoss, x: torch.Tensor) -> None:
        rob(x, clean_logits=torch.zeros(x.shape[0], 10))

    def input_raises(rob: RobustnessLoss, x: torch.Tensor) -> None:
        rob.input_perturbation = Broken("raise")
        rob(x)

    def forward_fails(rob: RobustnessLoss, x: torch.Tensor) -> None:
        rob.input_perturbation = Broken("bad-shape")
        rob(x)

    return [
        ("nan-x", nan_x),
        ("short-clean-logits", short_logits),
        ("inf-clean-logits", inf_logits),
        ("missing-clean-features", no_features),
        ("perturbation-raises", input_raises),
        ("perturbed-forward-fails", forward_fails),
    ]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "call"), bad_calls(), ids=[n for n, _ in bad_calls()])
def test_teacher_is_unchanged_when_the_call_raises(train: bool, name: str, call: Any) -> None:
    teacher = make_teacher(train=train)
    rob = RobustnessLoss(
        teacher,
        input_perturbation=GaussianNoise(0.1),
        weight_perturbation=None,
        mode="input",
        generator=seeded(0),
    )
    with untouched(teacher), pytest.raises((ValueError, RuntimeError)):
        call(rob, images())
    assert teacher.training is train


@given(
    mode=st.sampled_from(MODES),
    num_draws=st.integers(1, 3),
    feature_distance=st.sampled_from(FEATURE_KINDS),
    prediction_distance=st.sampled_from(DIVERGENCE_KINDS),
    train=st.booleans(),
    detach_clean=st.booleans(),
    reuse=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_teacher_untouched_and_loss_well_formed(
    mode: Any,
    num_draws: int,
    feature_distance: Any,
    prediction_distance: Any,
    train: bool,
    detach_clean: bool,
    reuse: bool,
    seed: int,
) -> None:
    teacher = make_teacher(train=train, seed=5)
    rob = RobustnessLoss(
        teacher,
        mode=mode,
        num_draws=num_draws,
        feature_distance=feature_distance,
        prediction_distance=prediction_distance,
        detach_clean=detach_clean,
        generator=seeded(seed),
    )
    x = torch.randn(4, 1, 16, 16, generator=seeded(seed + 1)).requires_grad_()
    kwargs: dict[str, Any] = {}
    if reuse:
        # In train mode the caller's own pass updates BatchNorm: the snapshot comes after it.
        with capture_features(teacher, rob.feature_layers) as feats:
            kwargs = {"clean_logits": teacher(x), "clean_features": dict(feats)}
    with untouched(teacher):
        parts = rob.parts(x, **kwargs)
        parts.loss.backward()
    assert torch.isfinite(parts.per_sample).all() and bool((parts.per_sample >= 0).all())
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert all(p.grad is None for p in teacher.parameters())


# --------------------------------------------------------------------------------------------
# Gradients and randomness
# --------------------------------------------------------------------------------------------


def test_gradient_reaches_the_input_and_never_the_teacher() -> None:
    teacher = make_teacher().requires_grad_(True)
    rob = RobustnessLoss(teacher, mode="joint", generator=seeded(0))
    x = images()
    rob(x).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_gradient_reaches_a_generator_through_the_images() -> None:
    teacher = make_teacher()
    make_images = nn.Sequential(nn.Linear(8, 256), nn.Unflatten(1, (1, 16, 16)))
    rob = RobustnessLoss(teacher, generator=seeded(0))
    rob(make_images(torch.randn(4, 8, generator=seeded(1)))).backward()
    grads = [p.grad for p in make_images.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_loss_different_seed_different_loss(mode: Any) -> None:
    teacher = make_teacher()
    x = images()

    def value(seed: int) -> torch.Tensor:
        rob = RobustnessLoss(teacher, mode=mode, num_draws=2, generator=seeded(seed))
        return rob(x).detach()

    assert torch.equal(value(11), value(11))
    assert not torch.equal(value(11), value(12))


def test_generator_advances_between_calls() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, generator=seeded(0))
    x = images()
    assert not torch.equal(rob(x).detach(), rob(x).detach())


def test_detach_clean_changes_the_gradient_not_the_value() -> None:
    teacher = make_teacher()

    def run(detach: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rob = RobustnessLoss(teacher, mode="joint", detach_clean=detach, generator=seeded(4))
        x = images()
        loss = rob(x)
        loss.backward()
        assert x.grad is not None
        return loss.detach(), x.grad

    value_attached, grad_attached = run(False)
    value_detached, grad_detached = run(True)
    torch.testing.assert_close(value_attached, value_detached, rtol=0, atol=0)
    assert float(grad_detached.abs().sum()) > 0
    assert not torch.allclose(grad_attached, grad_detached)


# --------------------------------------------------------------------------------------------
# Cost: teacher passes, no copies
# --------------------------------------------------------------------------------------------


@contextmanager
def count_forwards(model: nn.Module) -> Iterator[list[int]]:
    calls = [0]

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        calls[0] += 1

    handle = model.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize(("num_draws", "full", "reused"), [(1, 2, 1), (3, 4, 3)])
@pytest.mark.parametrize("mode", MODES)
def test_number_of_teacher_passes(num_draws: int, full: int, reused: int, mode: Any) -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, mode=mode, num_draws=num_draws, generator=seeded(0))
    x = images()
    with count_forwards(teacher) as calls:
        rob(x).backward()
    assert calls[0] == full
    with capture_features(teacher, rob.feature_layers) as feats:
        logits = teacher(x)
    with count_forwards(teacher) as calls:
        rob(x, clean_logits=logits, clean_features=feats).backward()
    assert calls[0] == reused


def test_no_copy_of_the_teacher_and_no_module_built(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, mode="joint", num_draws=2, generator=seeded(0))
    x = images()
    built: list[str] = []
    original_init = nn.Module.__init__

    def counting_init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        original_init(self, *args, **kwargs)

    def no_deepcopy(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("copy.deepcopy called")

    monkeypatch.setattr(copy, "deepcopy", no_deepcopy)
    monkeypatch.setattr(nn.Module, "__init__", counting_init)
    data = {n: p.data_ptr() for n, p in teacher.named_parameters()}
    rob(x).backward()
    monkeypatch.undo()
    assert built == []
    assert {n: p.data_ptr() for n, p in teacher.named_parameters()} == data


def test_reusing_the_clean_pass_gives_the_same_loss() -> None:
    teacher = make_teacher()
    x = images(batch=6)
    full = RobustnessLoss(teacher, num_draws=2, generator=seeded(9))
    reused = RobustnessLoss(teacher, num_draws=2, generator=seeded(9))
    x_full = x.detach().clone().requires_grad_()
    loss_full = full(x_full)
    loss_full.backward()
    x_reused = x.detach().clone().requires_grad_()
    with capture_features(teacher, reused.feature_layers) as feats:
        logits = teacher(x_reused)
    loss_reused = reused(x_reused, clean_logits=logits, clean_features=feats)
    loss_reused.backward()
    torch.testing.assert_close(loss_reused, loss_full, rtol=1e-6, atol=1e-7)
    assert x_full.grad is not None and x_reused.grad is not None
    torch.testing.assert_close(x_reused.grad, x_full.grad, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Configuration and inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_draws": 0}, ["num_draws", "1..64"]),
        ({"num_draws": 65}, ["num_draws", "1..64"]),
        ({"num_draws": 1.5}, ["num_draws", "1..64"]),
        ({"threshold": "0.1"}, ["threshold", ">= 0", "'0.1'"]),
        ({"threshold": True}, ["threshold", ">= 0"]),
        ({"feature_distance": "euclid"}, ["feature_distance", "'cosine'", "'nmse'"]),
        ({"prediction_distance": "ce"}, ["prediction_distance", "'l1'", "'js'"]),
        ({"mode": "serial"}, ["mode", "'random'", "'joint'", "'input'", "'weight'"]),
        ({"threshold": -0.1}, ["threshold", ">= 0"]),
        ({"threshold": float("nan")}, ["threshold", ">= 0"]),
        ({"temperature": 0.0}, ["temperature", "> 0"]),
        ({"temperature": -1.0}, ["temperature", "> 0"]),
        ({"feature_weight": -1.0}, ["feature_weight", ">= 0"]),
        ({"prediction_weight": float("inf")}, ["prediction_weight", ">= 0"]),
        ({"feature_weight": 0.0, "prediction_weight": 0.0}, ["feature_weight", "both be 0"]),
        ({"mode": "input", "input_perturbation": None}, ["mode='input'", "input_perturbation"]),
        ({"mode": "joint", "weight_perturbation": None}, ["mode='joint'", "weight_perturbation"]),
        (
            {"input_perturbation": None, "weight_perturbation": None},
            ["input_perturbation", "weight_perturbation", "both be None"],
        ),
        ({"feature_layers": "layer9"}, ["'layer9'", "its modules are", "layer1.0.conv1"]),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else "",
)
def test_bad_configuration_raises_naming_argument_and_allowed_values(
    kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        RobustnessLoss(make_teacher(), **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("build", "word"),
    [
        (lambda: GaussianNoise(std=-0.1), "std"),
        (lambda: GaussianWeightNoise(eps=-0.1), "eps"),
        (lambda: GaussianWeightNoise(eps=0.1, mode="layer"), "mode"),
    ],
    ids=["noise-std", "weight-eps", "weight-mode"],
)
def test_bad_perturbation_raises(build: Any, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        build()


def test_non_finite_inputs_raise_clear_errors() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, generator=seeded(0))
    x = images()
    bad = x.detach().clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteInputError, match=r"^x contains NaN"):
        rob(bad)
    with capture_features(teacher, rob.feature_layers) as feats:
        logits = teacher(x)
    inf_logits = logits.detach().clone()
    inf_logits[1, 2] = float("inf")
    with pytest.raises(NonFiniteInputError, match=r"^clean_logits contains NaN"):
        rob(x, clean_logits=inf_logits, clean_features=feats)


def test_clean_logits_without_features_or_of_wrong_size_raise() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, generator=seeded(0))
    x = images()
    with capture_features(teacher, rob.feature_layers) as feats:
        logits = teacher(x)
    with pytest.raises(ValueError, match="clean_features is required"):
        rob(x, clean_logits=logits)
    with pytest.raises(ValueError, match=r"lacks layers \['fc'\]"):
        rob(x, clean_logits=logits, clean_features={})
    with pytest.raises(ValueError, match="clean_logits must have shape"):
        rob(x, clean_logits=logits[:2], clean_features=feats)


def test_constructor_rejects_a_non_module() -> None:
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        RobustnessLoss(lambda x: x)


# --------------------------------------------------------------------------------------------
# Feature layers
# --------------------------------------------------------------------------------------------


def test_default_feature_layer_is_the_input_of_the_last_linear() -> None:
    assert RobustnessLoss(make_teacher()).feature_layers == {"fc": "input"}
    with torch.random.fork_rng():
        mobilenet = mobilenet_v2(num_classes=10)
    assert RobustnessLoss(mobilenet).feature_layers == {"classifier.1": "input"}


def test_feature_weight_zero_captures_nothing_and_works() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, feature_weight=0.0, generator=seeded(0))
    assert rob.feature_layers == {}
    x = images()
    parts = rob.parts(x)
    assert float(parts.feature) == 0.0
    torch.testing.assert_close(parts.loss, parts.prediction)
    reused = rob(x, clean_logits=teacher(x))  # no clean features needed
    reused.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (["layer1", "layer2"], {"layer1": "output", "layer2": "output"}),
        ("layer*.0.relu2", {f"layer{i}.0.relu2": "output" for i in (1, 2, 3)}),
        ({"layer3": "output", "penultimate": "input"}, {"layer3": "output", "fc": "input"}),
    ],
    ids=["names", "glob", "mapping"],
)
def test_custom_feature_layers(spec: Any, expected: dict[str, str]) -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(
        teacher, prediction_weight=0.0, feature_distance="mse", generator=seeded(0)
    )
    custom = RobustnessLoss(
        teacher,
        feature_layers=spec,
        prediction_weight=0.0,
        feature_distance="mse",
        generator=seeded(0),
    )
    assert custom.feature_layers == expected
    x = images()
    value = custom(x)
    value.backward()
    assert value.item() > 0 and not torch.equal(value.detach(), rob(x).detach())
    with capture_features(teacher, custom.feature_layers) as feats:
        logits = teacher(x)
    reused = RobustnessLoss(
        teacher,
        feature_layers=spec,
        prediction_weight=0.0,
        feature_distance="mse",
        generator=seeded(0),
    )
    torch.testing.assert_close(reused(x, clean_logits=logits, clean_features=feats), value)


# --------------------------------------------------------------------------------------------
# Threshold
# --------------------------------------------------------------------------------------------


def test_a_large_threshold_gives_exactly_zero() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, threshold=1e6, generator=seeded(0))
    x = images()
    loss = rob(x)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0


def test_threshold_subtracts_per_sample() -> None:
    teacher = make_teacher()
    x = images()
    free = RobustnessLoss(teacher, generator=seeded(2)).parts(x).per_sample
    eps_t = free.median().item()
    hinged = RobustnessLoss(teacher, threshold=eps_t, generator=seeded(2)).parts(x).per_sample
    torch.testing.assert_close(hinged, (free - eps_t).clamp_min(0), rtol=1e-6, atol=1e-7)


def test_noise_threshold_is_positive_and_linear_in_multiple() -> None:
    teacher = make_teacher()
    rob = RobustnessLoss(teacher, threshold=0.5, generator=seeded(0))
    with untouched(teacher):
        base = noise_threshold(rob, (4, 1, 16, 16), num_batches=2)
    rob.generator = seeded(0)
    double = noise_threshold(rob, (4, 1, 16, 16), multiple=2.0, num_batches=2)
    assert isinstance(base, float) and base > 0
    assert double == pytest.approx(2 * base, rel=1e-12)
    assert noise_threshold(rob, (4, 1, 16, 16), multiple=0.0) == 0.0
    # The configuration is never touched, not even temporarily.
    config = rob.config
    seen = []
    original = rob.parts

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(rob.config)
        return original(*args, **kwargs)

    rob.parts = spy  # type: ignore[method-assign]
    noise_threshold(rob, (4, 1, 16, 16), num_batches=2)
    assert seen and all(c is config for c in seen) and rob.config is config


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"multiple": -1.0}, "multiple"),
        ({"num_batches": 0}, "num_batches"),
        ({"input_shape": (1, 16, 16)}, "input_shape"),
    ],
)
def test_noise_threshold_rejects_bad_arguments(kwargs: dict[str, Any], word: str) -> None:
    rob = RobustnessLoss(make_teacher())
    call: dict[str, Any] = {"input_shape": (2, 1, 16, 16), **kwargs}
    with pytest.raises(ValueError, match=word):
        noise_threshold(rob, **call)


# --------------------------------------------------------------------------------------------
# Other teachers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [resnet18, mobilenet_v2], ids=["resnet18", "mobilenet_v2"])
def test_torchvision_teachers(factory: Any) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = factory(num_classes=10).eval().requires_grad_(False)
    rob = RobustnessLoss(teacher, num_draws=1, generator=seeded(0))
    x = images(batch=2, channels=3, side=32)
    with untouched(teacher):
        loss = rob(x)
        loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_quantized_teacher() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = quantize_model(resnet8(in_channels=1, image_size=16), w_bits=4, a_bits=4)
    teacher.eval()
    with torch.no_grad(), calibration(teacher):
        teacher(torch.randn(16, 1, 16, 16, generator=seeded(1)))
    freeze(teacher).requires_grad_(False)
    rob = RobustnessLoss(teacher, mode="joint", generator=seeded(0))
    x = images()
    with untouched(teacher):
        loss = rob(x)
        loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_every_setting_is_declared_once_on_the_configuration() -> None:
    """RobustnessLoss's keyword defaults are RobustnessConfig's; each setting has a help line."""
    import inspect

    import attrs

    from risloss.losses import RobustnessConfig
    from risloss.losses._robustness import default_weight_perturbation

    signature = inspect.signature(RobustnessLoss)
    config = RobustnessConfig()
    for field in attrs.fields(RobustnessConfig):
        assert signature.parameters[field.name].default == getattr(config, field.name)
        assert field.metadata["help"], field.name
    assert RobustnessLoss(make_teacher()).config == config
    assert config.prediction_distance == "l1"  # the paper's choice
    # The default weight noise has one definition.
    rob = RobustnessLoss(make_teacher())
    assert rob.weight_perturbation == default_weight_perturbation()
    assert default_weight_perturbation() == GaussianWeightNoise(eps=0.05, mode="relative")
    # Numbers are stored as floats; a bool or a string is rejected, naming the field.
    assert type(RobustnessConfig(threshold=1).threshold) is float
    for bad in (True, "0.5"):
        with pytest.raises(ValueError, match=r"^threshold must be a finite number >= 0"):
            RobustnessConfig(threshold=bad)  # type: ignore[arg-type]
