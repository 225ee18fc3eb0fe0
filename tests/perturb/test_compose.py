from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from risloss.perturb import (
    Brightness,
    Compose,
    Contrast,
    Cutout,
    GaussianNoise,
    InputPerturbation,
    RandomAffine,
    RandomChoice,
    RandomHorizontalFlip,
    RandomResizedCrop,
    default_input_perturbation,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 10, 10, generator=seeded(100 + seed))


def pool() -> list[nn.Module]:
    return [GaussianNoise(0.2), RandomHorizontalFlip(1.0), Brightness(0.5), Cutout(0.3)]


@given(seed=st.integers(0, 10_000))
def test_per_draw_choice_applies_exactly_the_chosen_operator(seed: int) -> None:
    op = RandomChoice(pool())  # type: ignore[arg-type]
    x = images()
    params = op.sample(x, seeded(seed))
    k = int(params.index[0])
    assert bool((params.index == k).all())
    assert [p is not None for p in params.params] == [i == k for i in range(len(op.ops))]
    chosen = op.ops[k]
    assert torch.equal(op.transform(x, params), chosen.transform(x, params.params[k]))  # type: ignore[operator]


def test_per_sample_choice_matches_a_loop() -> None:
    op = RandomChoice(pool(), per_sample=True)  # type: ignore[arg-type]
    x = images(b=16)
    params = op.sample(x, seeded(0))
    assert len(set(params.index.tolist())) > 1  # this seed mixes operators
    y = op.transform(x, params)
    for b in range(16):
        k = int(params.index[b])
        expected = op.ops[k].transform(x, params.params[k])[b]  # type: ignore[operator]
        assert torch.equal(y[b], expected)
    drawn = set(params.index.tolist())
    assert [p is not None for p in params.params] == [i in drawn for i in range(len(op.ops))]


def test_probabilities_are_respected() -> None:
    op = RandomChoice([GaussianNoise(0.1), Brightness(0.1)], p=[0.0, 3.0])
    assert op.p == (0.0, 1.0)
    x = images()
    assert all(int(op.sample(x, seeded(s)).index[0]) == 1 for s in range(20))
    uniform = RandomChoice(pool(), per_sample=True)  # type: ignore[arg-type]
    counts = Counter(uniform.sample(torch.zeros(4000, 1, 2, 2), seeded(0)).index.tolist())
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values())


def test_default_pool_holds_every_operator_and_draws_each() -> None:
    op = default_input_perturbation()
    kinds = [type(m) for m in op.ops]
    assert kinds == [
        GaussianNoise,
        RandomResizedCrop,
        RandomHorizontalFlip,
        RandomAffine,
        Cutout,
        Brightness,
        Contrast,
    ]
    assert op.p == pytest.approx((1 / 7,) * 7)
    assert not op.per_sample and default_input_perturbation(per_sample=True).per_sample
    x = images(b=2)
    drawn = {int(op.sample(x, seeded(s)).index[0]) for s in range(60)}
    assert drawn == set(range(7))


def test_default_pool_never_draws_the_identity() -> None:
    op = default_input_perturbation()
    x = images(b=4)
    for s in range(30):
        y = op(x, seeded(s))
        per_sample_change = (y - x).flatten(1).abs().amax(dim=1)
        assert bool((per_sample_change > 0).all()), s


def test_compose_is_the_series() -> None:
    ops: list[InputPerturbation[Any]] = [RandomAffine(10.0, 0.1), Cutout(0.3), Contrast(0.3)]
    op = Compose(ops)
    x = images()
    params = op.sample(x, seeded(0))
    assert len(params.params) == 3
    expected = x
    for inner, inner_params in zip(ops, params.params, strict=True):
        expected = inner.transform(expected, inner_params)
    assert torch.equal(op.transform(x, params), expected)


def test_nested_combinations() -> None:
    op = RandomChoice([Compose([Brightness(0.2), Contrast(0.2)]), default_input_perturbation()])
    x = images().requires_grad_(True)
    y = op(x, seeded(0))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_modules_are_registered() -> None:
    op = default_input_perturbation()
    assert len(list(op.children())) == 1 and len(op.ops) == 7
    assert len(list(Compose([GaussianNoise(), Brightness()]).modules())) == 4


def test_transform_rejects_mismatched_params() -> None:
    op = RandomChoice([GaussianNoise(), Brightness()])
    params = op.sample(images(), seeded(0))
    with pytest.raises(ValueError, match="one entry per operator"):
        RandomChoice([GaussianNoise()]).transform(images(), params)
    compose = Compose([GaussianNoise(), Brightness()])
    with pytest.raises(ValueError, match="one entry per operator"):
        Compose([GaussianNoise()]).transform(images(), compose.sample(images(), seeded(0)))


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: RandomChoice([]), ValueError, "^ops must hold at least one"),
        (lambda: Compose([]), ValueError, "^ops must hold at least one"),
        (lambda: RandomChoice([nn.ReLU()]), TypeError, r"^ops\[0\] must be"),  # type: ignore[list-item]
        (lambda: RandomChoice([GaussianNoise()], p=[0.5, 0.5]), ValueError, "^p must have one"),
        (lambda: RandomChoice([GaussianNoise()], p=[-1.0]), ValueError, "^p must be"),
        (lambda: RandomChoice([GaussianNoise()], p=[0.0]), ValueError, "^p must be"),
    ],
)
def test_invalid_configuration(
    make: Callable[[], object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize(
    ("pool_name", "kinds"),
    [
        ("noise", {GaussianNoise}),
        ("geometric", {RandomResizedCrop, RandomHorizontalFlip, RandomAffine, Cutout}),
        ("photometric", {GaussianNoise, Brightness, Contrast}),
    ],
)
def test_default_pool_subsets(pool_name: str, kinds: set[type]) -> None:
    op = default_input_perturbation(pool=pool_name)
    assert {type(m) for m in op.ops} == kinds
    assert op(images(), seeded(0)).shape == images().shape


def test_default_pool_all_is_the_union_in_order() -> None:
    names = [type(m).__name__ for m in default_input_perturbation(pool="all").ops]
    assert names == [
        "GaussianNoise", "RandomResizedCrop", "RandomHorizontalFlip", "RandomAffine",
        "Cutout", "Brightness", "Contrast",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"pool": "color"}, "pool must be one of"), ({"noise_std": -1.0}, "noise_std must be")],
)
def test_default_pool_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        default_input_perturbation(**kwargs)


def test_standardized_perturbs_the_picture_alike_in_either_input_convention() -> None:
    """The same draw on a standardized batch and on that batch mapped to [0, 1]-like pixels
    (x = s * z + m) gives the same perturbed picture, mapped the same way."""
    from risloss.perturb import Standardized, default_input_perturbation

    torch.manual_seed(0)
    z = torch.randn(6, 3, 16, 16)
    s, m = torch.tensor([0.25, 0.24, 0.26]), torch.tensor([0.49, 0.48, 0.45])
    x = z * s.view(1, 3, 1, 1) + m.view(1, 3, 1, 1)
    pool = default_input_perturbation(per_sample=True)
    plain = pool(z, torch.Generator().manual_seed(3))
    wrapped = Standardized(pool, s, m)(x, torch.Generator().manual_seed(3))
    assert torch.allclose(wrapped, plain * s.view(1, 3, 1, 1) + m.view(1, 3, 1, 1), atol=1e-5)
    # the bare pool on the pixels is another perturbation: noise 4 times as strong
    assert not torch.allclose(pool(x, torch.Generator().manual_seed(3)), wrapped, atol=1e-3)
    # at scale 1 and shift 0 it is the pool itself, bit for bit
    same = Standardized(pool, [1.0], [0.0])(z, torch.Generator().manual_seed(3))
    assert torch.equal(same, plain)


def test_standardized_refuses_bad_statistics() -> None:
    from risloss.perturb import GaussianNoise, Standardized

    with pytest.raises(ValueError, match="scale must be positive"):
        Standardized(GaussianNoise(), [0.0], [0.5])
    with pytest.raises(ValueError, match="one value per channel each, got 2 and 1"):
        Standardized(GaussianNoise(), [0.2, 0.3], [0.5])
    with pytest.raises(TypeError, match="inner must be an InputPerturbation"):
        Standardized(torch.nn.Identity(), [1.0], [0.0])  # type: ignore[arg-type]
