from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from risloss.perturb import (
    AffineParams,
    Brightness,
    BrightnessParams,
    Compose,
    Contrast,
    ContrastParams,
    CropParams,
    CutMix,
    CutMixParams,
    Cutout,
    CutoutParams,
    FlipParams,
    GaussianNoise,
    InputPerturbation,
    MixParams,
    MixUp,
    NoiseParams,
    RandomAffine,
    RandomChoice,
    RandomHorizontalFlip,
    RandomResizedCrop,
    default_input_perturbation,
)

# Every operator, with a non-trivial magnitude; the contract tests run over all of them.
OPS: dict[str, Callable[[], InputPerturbation[Any]]] = {
    "noise": lambda: GaussianNoise(std=0.1),
    "crop": lambda: RandomResizedCrop(scale=(0.3, 0.9)),
    "flip": lambda: RandomHorizontalFlip(p=0.5),
    "affine": lambda: RandomAffine(degrees=20.0, translate=0.2),
    "affine_reflection": lambda: RandomAffine(degrees=20.0, padding_mode="reflection"),
    "cutout_fraction": lambda: Cutout(size=0.4),
    "cutout_pixels": lambda: Cutout(size=3, p=0.7, fill=-1.0),
    "brightness": lambda: Brightness(magnitude=0.3),
    "contrast": lambda: Contrast(magnitude=0.3),
    "choice": lambda: default_input_perturbation(),
    "choice_per_sample": lambda: default_input_perturbation(per_sample=True),
    "compose": lambda: Compose([RandomAffine(), Cutout(0.3), Contrast(0.2)]),
    "mixup": lambda: MixUp(p=0.7),
    "cutmix": lambda: CutMix(p=0.7),
}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 4, c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=seeded(100 + seed))


@st.composite
def image_batches(draw: st.DrawFn) -> torch.Tensor:
    b = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(2, 9))
    w = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return torch.randn(b, c, h, w, generator=seeded(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------
# Contract tests, over every operator
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPS)
def test_shape_dtype_preserved(name: str) -> None:
    op = OPS[name]()
    for dtype in (torch.float32, torch.float64):
        x = images().to(dtype)
        y = op(x, seeded(0))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


@pytest.mark.parametrize("name", OPS)
def test_replay_and_forward_equals_transform_of_sample(name: str) -> None:
    op = OPS[name]()
    x = images()
    params = op.sample(x, seeded(3))
    first = op.transform(x, params)
    assert torch.equal(first, op.transform(x, params))
    assert torch.equal(op(x, seeded(3)), first)


@pytest.mark.parametrize("name", OPS)
def test_same_seed_same_output_different_seeds_differ(name: str) -> None:
    op = OPS[name]()
    x = images(b=6)
    assert torch.equal(op(x, seeded(7)), op(x, seeded(7)))
    outputs = [op(x, seeded(s)) for s in range(5)]
    assert any(not torch.equal(outputs[0], y) for y in outputs[1:])


@pytest.mark.parametrize("name", OPS)
def test_sample_reads_only_the_shape(name: str) -> None:
    op = OPS[name]()
    x = images()
    params = op.sample(torch.zeros_like(x), seeded(5))
    assert torch.equal(op.transform(x, params), op(x, seeded(5)))


@pytest.mark.parametrize("name", OPS)
def test_global_rng_untouched_with_generator(name: str) -> None:
    op = OPS[name]()
    state = torch.get_rng_state()
    op(images(), seeded(1))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", OPS)
def test_input_not_modified_in_place(name: str) -> None:
    op = OPS[name]()
    x = images()
    before, version = x.clone(), x._version
    op(x, seeded(0))
    assert torch.equal(x, before) and x._version == version


@pytest.mark.parametrize("name", OPS)
def test_gradients_reach_the_input(name: str) -> None:
    op = OPS[name]()
    x = images().requires_grad_(True)
    weights = torch.randn(x.shape, generator=seeded(9))
    (op(x, seeded(0)) * weights).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", OPS)
def test_gradcheck_float64_with_fixed_params(name: str) -> None:
    op = OPS[name]()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=seeded(4), requires_grad=True)
    params = op.sample(x.detach(), seeded(2))
    assert torch.autograd.gradcheck(lambda t: op.transform(t, params), (x,))


@pytest.mark.parametrize("name", OPS)
def test_rejects_non_image_input(name: str) -> None:
    op = OPS[name]()
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        op(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        op(torch.zeros(1, 1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("name", OPS)
def test_module_apply_still_works(name: str) -> None:
    # nn.Module.apply(fn) recurses into children; the operators must not shadow it.
    op = OPS[name]()
    seen: list[str] = []
    op.apply(lambda m: seen.append(type(m).__name__))
    assert type(op).__name__ in seen


# ------------------------------------------------------------------------------------------
# Zero perturbation is the identity
# ------------------------------------------------------------------------------------------


@given(x=image_batches(), seed=st.integers(0, 1000))
def test_zero_magnitude_is_exactly_the_identity(x: torch.Tensor, seed: int) -> None:
    for op in (
        GaussianNoise(std=0.0),
        Brightness(magnitude=0.0),
        Contrast(magnitude=0.0),
        RandomHorizontalFlip(p=0.0),
        Cutout(size=0.5, p=0.0),
        MixUp(p=0.0),
        CutMix(p=0.0),
    ):
        assert torch.equal(op(x, seeded(seed)), x), op


@given(x=image_batches(), seed=st.integers(0, 1000))
def test_zero_geometric_transform_is_the_identity(x: torch.Tensor, seed: int) -> None:
    tol = 1e-5 if x.dtype == torch.float32 else 1e-12
    affine = RandomAffine(degrees=0.0, translate=0.0)
    torch.testing.assert_close(affine(x, seeded(seed)), x, atol=tol, rtol=0)
    full = CropParams(center=x.new_zeros(x.shape[0], 2), size=x.new_ones(x.shape[0], 2))
    torch.testing.assert_close(RandomResizedCrop().transform(x, full), x, atol=tol, rtol=0)


@given(x=image_batches(), seed=st.integers(0, 1000), std=st.floats(0.0, 2.0))
def test_noise_is_x_plus_std_xi(x: torch.Tensor, seed: int, std: float) -> None:
    op = GaussianNoise(std=std)
    params = op.sample(x, seeded(seed))
    assert params.noise.shape == x.shape
    assert torch.equal(op.transform(x, params), x + std * params.noise)


# ------------------------------------------------------------------------------------------
# Reference implementations
# ------------------------------------------------------------------------------------------


def test_noise_is_standard_normal() -> None:
    x = torch.zeros(8, 3, 32, 32)
    noise = GaussianNoise(std=0.5).sample(x, seeded(0)).noise
    assert abs(float(noise.mean())) < 0.02
    assert abs(float(noise.std()) - 1.0) < 0.02


def test_flip_matches_a_loop() -> None:
    x = images(b=8)
    op = RandomHorizontalFlip(p=0.5)
    params = op.sample(x, seeded(0))
    flips = params.flip.tolist()
    assert 0 < sum(flips) < 8  # this seed flips some samples, not all
    y = op.transform(x, params)
    for b in range(8):
        expected = x[b].flip(-1) if flips[b] else x[b]
        assert torch.equal(y[b], expected)


def test_flip_probability() -> None:
    flips = RandomHorizontalFlip(p=0.3).sample(torch.zeros(4000, 1, 1, 1), seeded(0)).flip
    assert abs(float(flips.float().mean()) - 0.3) < 0.03


def test_cutout_matches_a_pixel_loop() -> None:
    x = images(b=5, h=9, w=7)
    op = Cutout(size=0.4, p=0.6, fill=2.5)
    params = op.sample(x, seeded(3))
    y = op.transform(x, params)
    for b in range(5):
        top, left, bottom, right = params.boxes[b].tolist()
        for i in range(9):
            for j in range(7):
                erased = bool(params.active[b]) and top <= i < bottom and left <= j < right
                expected = torch.full((3,), 2.5) if erased else x[b, :, i, j]
                assert torch.equal(y[b, :, i, j], expected)


def test_cutout_box_sizes() -> None:
    x = torch.zeros(200, 1, 20, 10)
    boxes = Cutout(size=0.3).sample(x, seeded(0)).boxes
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert int(heights.max()) == 6 and int(widths.max()) == 3  # round(0.3 * 20), round(0.3 * 10)
    assert int(heights.min()) >= 3 and int(widths.min()) >= 1  # clipped at the border
    pixels = Cutout(size=4).sample(x, seeded(0)).boxes
    assert int((pixels[:, 2] - pixels[:, 0]).max()) == 4


def test_cutout_gradient_is_zero_inside_the_box() -> None:
    x = images(b=2).requires_grad_(True)
    op = Cutout(size=0.5)
    params = op.sample(x.detach(), seeded(0))
    op.transform(x, params).sum().backward()
    assert x.grad is not None
    erased = op.transform(torch.ones_like(x), params) == 0
    assert torch.equal(x.grad, (~erased).to(x.dtype))


def test_brightness_and_contrast_match_a_loop() -> None:
    x = images(b=6)
    bright = Brightness(magnitude=0.3)
    bp = bright.sample(x, seeded(0))
    cont = Contrast(magnitude=0.3)
    cp = cont.sample(x, seeded(0))
    yb, yc = bright.transform(x, bp), cont.transform(x, cp)
    for b in range(6):
        shift, factor = float(bp.shift[b]), float(cp.factor[b])
        assert abs(shift) <= 0.3 and 0.7 <= factor <= 1.3
        torch.testing.assert_close(yb[b], x[b] + shift)
        mean = x[b].mean()
        torch.testing.assert_close(yc[b], mean + factor * (x[b] - mean))


def test_affine_integer_translation_is_a_shift() -> None:
    x = images(b=1, c=2, h=8, w=8)
    op = RandomAffine(degrees=0.0, translate=0.5)
    params = AffineParams(angle=torch.zeros(1), translate=torch.tensor([[0.25, -0.125]]))
    y = op.transform(x, params)
    expected = torch.zeros_like(x)
    expected[..., : 8 - 1, 2:] = x[..., 1:, : 8 - 2]  # 2 pixels right, 1 pixel up
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_affine_quarter_turn_is_rot90() -> None:
    x = images(b=2, h=6, w=6)
    op = RandomAffine(degrees=90.0, translate=0.0)
    params = AffineParams(angle=torch.tensor([90.0, -90.0]), translate=torch.zeros(2, 2))
    y = op.transform(x, params)
    torch.testing.assert_close(y[0], torch.rot90(x[0], -1, (1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], torch.rot90(x[1], 1, (1, 2)), atol=1e-5, rtol=0)


def test_affine_rotation_is_exact_in_pixels_for_non_square_images() -> None:
    # A point on the horizontal axis at distance d from the centre lands on the vertical axis
    # at distance d (in pixels), whatever the aspect ratio.
    x = torch.zeros(1, 1, 11, 21)
    x[0, 0, 5, 10 + 4] = 1.0  # 4 pixels right of the centre (row 5, col 10)
    op = RandomAffine(degrees=90.0, translate=0.0)
    y = op.transform(x, AffineParams(angle=torch.tensor([90.0]), translate=torch.zeros(1, 2)))
    assert y[0, 0].argmax().item() == (5 + 4) * 21 + 10
    torch.testing.assert_close(y.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_affine_sampled_ranges() -> None:
    params = RandomAffine(degrees=10.0, translate=0.05).sample(torch.zeros(500, 1, 4, 4), seeded(0))
    assert float(params.angle.abs().max()) <= 10.0 and float(params.angle.abs().max()) > 9.0
    assert float(params.translate.abs().max()) <= 0.05


def test_crop_of_left_half_is_bilinear_upsampling() -> None:
    x = images(b=1, h=6, w=8)
    params = CropParams(center=torch.tensor([[-0.5, 0.0]]), size=torch.tensor([[0.5, 1.0]]))
    y = RandomResizedCrop().transform(x, params)
    expected = F.interpolate(x[..., :4], size=(6, 8), mode="bilinear", align_corners=False)
    # interpolate() clamps at the crop's edge; the crop is a window on the whole image, so its
    # last column (source position 3.25) blends in the first pixel right of the box.
    torch.testing.assert_close(y[..., :7], expected[..., :7], atol=1e-5, rtol=1e-5)
    last = 0.75 * x[..., 3] + 0.25 * x[..., 4]
    torch.testing.assert_close(y[..., 7], last, atol=1e-5, rtol=1e-5)


def test_crop_sampled_boxes_lie_inside_with_the_requested_area() -> None:
    op = RandomResizedCrop(scale=(0.25, 0.5), ratio=(0.5, 2.0))
    params = op.sample(torch.zeros(1000, 1, 16, 24), seeded(0))
    w, h = params.size[:, 0], params.size[:, 1]
    assert bool(((w > 0) & (w <= 1) & (h > 0) & (h <= 1)).all())
    assert bool((params.center.abs() <= 1 - params.size + 1e-6).all())
    area = w * h
    unclipped = (w < 1) & (h < 1)
    assert bool(((area[unclipped] >= 0.25 - 1e-5) & (area[unclipped] <= 0.5 + 1e-5)).all())
    ratio = (w * 24) / (h * 16)  # aspect ratio in pixels
    assert bool(((ratio[unclipped] >= 0.5 - 1e-4) & (ratio[unclipped] <= 2.0 + 1e-4)).all())


def test_transform_rejects_params_of_another_batch() -> None:
    op = GaussianNoise(0.1)
    params = op.sample(images(b=4), seeded(0))
    with pytest.raises(ValueError, match=r"params\.noise"):
        op.transform(images(b=3), params)
    flip = RandomHorizontalFlip()
    with pytest.raises(ValueError, match="one entry per sample"):
        flip.transform(images(b=3), FlipParams(flip=torch.ones(4, dtype=torch.bool)))


def test_params_records_are_frozen() -> None:
    import attrs

    for record in (
        NoiseParams(noise=torch.zeros(1)),
        BrightnessParams(shift=torch.zeros(1)),
        ContrastParams(factor=torch.ones(1)),
        CutoutParams(boxes=torch.zeros(1, 4, dtype=torch.long), active=torch.ones(1).bool()),
    ):
        field = attrs.fields(type(record))[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(record, field, torch.ones(1))


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: GaussianNoise(std=-0.1), "std"),
        (lambda: GaussianNoise(std=float("nan")), "std"),
        (lambda: RandomResizedCrop(scale=(0.0, 1.0)), "scale"),
        (lambda: RandomResizedCrop(scale=(0.8, 0.5)), "scale"),
        (lambda: RandomResizedCrop(scale=(0.5, 1.2)), "scale"),
        (lambda: RandomResizedCrop(ratio=(2.0, 1.0)), "ratio"),
        (lambda: RandomResizedCrop(ratio=(0.0, 1.0)), "ratio"),
        (lambda: RandomHorizontalFlip(p=1.5), "p"),
        (lambda: RandomAffine(degrees=-1.0), "degrees"),
        (lambda: RandomAffine(degrees=200.0), "degrees"),
        (lambda: RandomAffine(translate=1.5), "translate"),
        (lambda: RandomAffine(padding_mode="wrap"), "padding_mode"),  # type: ignore[arg-type]
        (lambda: Cutout(size=0.0), "size"),
        (lambda: Cutout(size=1.5), "size"),
        (lambda: Cutout(size=0), "size"),
        (lambda: Cutout(p=-0.1), "p"),
        (lambda: Cutout(fill=float("inf")), "fill"),
        (lambda: Brightness(magnitude=-0.2), "magnitude"),
        (lambda: Contrast(magnitude=1.5), "magnitude"),
        (lambda: MixUp(p=1.5), "p"),
        (lambda: MixUp(p=-0.1), "p"),
        (lambda: CutMix(p=1.5), "p"),
    ],
)
def test_invalid_configuration_names_the_argument(
    make: Callable[[], object], argument: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        make()


def test_invalid_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="std"):
        GaussianNoise(std="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="size"):
        Cutout(size=True)


def test_repr_shows_the_configuration() -> None:
    assert "std=0.25" in repr(GaussianNoise(0.25))
    assert "padding_mode='border'" in repr(RandomAffine(padding_mode="border"))
    assert "p=(0.5, 0.5)" in repr(RandomChoice([GaussianNoise(), Brightness()]))


# ------------------------------------------------------------------------------------------
# MixUp
# ------------------------------------------------------------------------------------------


@given(x=image_batches(), seed=st.integers(0, 1000), p=st.floats(0.0, 1.0))
def test_mixup_matches_a_loop(x: torch.Tensor, seed: int, p: float) -> None:
    op = MixUp(p=p)
    params = op.sample(x, seeded(seed))
    y = op.transform(x, params)
    assert sorted(params.partner.tolist()) == list(range(x.shape[0]))  # a permutation
    for b in range(x.shape[0]):
        w = float(params.weight[b])
        assert 0.0 <= w <= 1.0
        expected = w * x[b] + (1.0 - w) * x[int(params.partner[b])]
        torch.testing.assert_close(y[b], expected)


def test_mixup_probability() -> None:
    x = torch.zeros(20_000, 1, 1, 1)
    params = MixUp(p=0.3).sample(x, seeded(0))
    mixed = (params.weight < 1.0).float().mean().item()
    assert abs(mixed - 0.3) < 0.02
    # the weights of mixed samples are uniform on [0, 1]
    assert abs(params.weight[params.weight < 1.0].mean().item() - 0.5) < 0.02


def test_mixup_params_check_the_batch() -> None:
    x = images(b=4)
    params = MixParams(partner=torch.tensor([1, 0]), weight=torch.ones(2))
    with pytest.raises(ValueError, match="partner"):
        MixUp().transform(x, params)


# ------------------------------------------------------------------------------------------
# CutMix
# ------------------------------------------------------------------------------------------


@given(x=image_batches(), seed=st.integers(0, 1000), p=st.floats(0.0, 1.0))
def test_cutmix_matches_a_pixel_loop(x: torch.Tensor, seed: int, p: float) -> None:
    op = CutMix(p=p)
    params = op.sample(x, seeded(seed))
    y = op.transform(x, params)
    assert sorted(params.partner.tolist()) == list(range(x.shape[0]))  # a permutation
    b, _, h, w = x.shape
    expected = x.clone()
    pasted = torch.zeros(b)
    for i in range(b):
        top, left, bottom, right = (int(v) for v in params.boxes[i])
        assert 0 <= top <= bottom <= h and 0 <= left <= right <= w
        if bool(params.active[i]):
            partner = int(params.partner[i])
            expected[i, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
            pasted[i] = (bottom - top) * (right - left)
    assert torch.equal(y, expected)
    torch.testing.assert_close(params.kept_fraction(h, w), 1.0 - pasted / (h * w))


def test_cutmix_probability_and_area() -> None:
    x = torch.zeros(20_000, 1, 32, 32)
    params = CutMix(p=0.4).sample(x, seeded(0))
    assert abs(params.active.float().mean().item() - 0.4) < 0.02
    # before clipping at the border, the pasted share is uniform on [0, 1]; clipping only
    # shrinks it, so the kept share averages a little above one half
    kept = params.kept_fraction(32, 32)[params.active]
    assert 0.5 < kept.mean().item() < 0.8
    assert kept.min().item() < 0.05 and kept.max().item() == 1.0


def test_cutmix_params_check_the_batch() -> None:
    x = images(b=4)
    params = CutMixParams(
        partner=torch.tensor([1, 0]),
        boxes=torch.zeros(2, 4, dtype=torch.long),
        active=torch.ones(2, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match="partner"):
        CutMix().transform(x, params)
