"""Differentiable input perturbations: noise, geometric transforms, cutout, photometric jitter."""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from risloss import _validators as rules
from risloss._validators import check
from risloss.perturb._base import (
    InputPerturbation,
    bernoulli,
    check_batch,
    check_images,
    normal,
    sample_device,
    uniform,
)

__all__ = [
    "AffineParams",
    "Brightness",
    "BrightnessParams",
    "Contrast",
    "ContrastParams",
    "CropParams",
    "CutMix",
    "CutMixParams",
    "Cutout",
    "CutoutParams",
    "FlipParams",
    "GaussianNoise",
    "MixParams",
    "MixUp",
    "NoiseParams",
    "RandomAffine",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
]

PaddingMode = Literal["zeros", "border", "reflection"]
_PADDING_MODES = ("zeros", "border", "reflection")


def _number(name: str, value: object, rule: rules.number_in = rules.finite) -> float:
    """``value`` as a float, checked against ``rule`` (any finite number by default)."""
    return float(check(rule, name, value))  # type: ignore[arg-type]


def _warp(x: Tensor, theta: Tensor, padding_mode: str) -> Tensor:
    """Resample ``x`` at ``theta @ (u, v, 1)`` (normalized coordinates), bilinearly."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _centred_boxes(
    bh: Tensor | int,
    bw: Tensor | int,
    h: int,
    w: int,
    b: int,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """``b`` boxes of sides ``(bh, bw)`` centred at uniform random pixels, clipped to the
    ``h x w`` image: ``(b, 4)`` bounds ``(top, left, bottom, right)``."""
    cy = torch.randint(0, h, (b,), generator=generator, device=device)
    cx = torch.randint(0, w, (b,), generator=generator, device=device)
    top, left = cy - bh // 2, cx - bw // 2
    return torch.stack(
        (top.clamp(0, h), left.clamp(0, w), (top + bh).clamp(0, h), (left + bw).clamp(0, w)),
        dim=1,
    )


def _box_mask(x: Tensor, boxes: Tensor, active: Tensor) -> Tensor:
    """Whether each pixel of ``x`` lies in its sample's box (samples not ``active``: none),
    ``(B, 1, H, W)`` boolean; the parameters are checked against the batch first."""
    check_batch(x, "boxes", boxes)
    check_batch(x, "active", active)
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    box = boxes.to(x.device).view(-1, 4, 1, 1)
    inside = (
        (rows >= box[:, 0])
        & (rows < box[:, 2])
        & (cols >= box[:, 1])
        & (cols < box[:, 3])
        & active.to(x.device).bool().view(-1, 1, 1)
    )
    return inside.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Additive Gaussian noise
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class NoiseParams:
    """Parameters of :class:`GaussianNoise`.

    Attributes:
        noise: the standard normal draw ``xi``, ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise, NoiseParams
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> params = GaussianNoise(std=0.5).sample(x, torch.Generator().manual_seed(0))
        >>> params.noise.shape
        torch.Size([2, 1, 4, 4])
        >>> GaussianNoise(std=0.5).transform(x, NoiseParams(noise=torch.ones_like(x))).unique()
        tensor([0.5000])
    """

    noise: Tensor


class GaussianNoise(InputPerturbation[NoiseParams]):
    """Additive Gaussian noise: ``T(x) = x + std * xi``, ``xi ~ N(0, I)``.

    ``std = 0`` is exactly the identity.

    Args:
        std: standard deviation of the noise, in the units of the (normalized) images.

    Raises:
        ValueError: ``std`` negative or not finite.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise
        >>> x = torch.zeros(2, 3, 8, 8)
        >>> y = GaussianNoise(std=0.1)(x, torch.Generator().manual_seed(0))
        >>> y.shape, bool((y - x).abs().max() > 0)
        (torch.Size([2, 3, 8, 8]), True)
        >>> torch.equal(GaussianNoise(std=0.0)(x), x)
        True
    """

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = _number("std", std, rules.non_negative)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> NoiseParams:
        check_images(x)
        return NoiseParams(noise=normal(tuple(x.shape), x, generator))

    def transform(self, x: Tensor, params: NoiseParams) -> Tensor:
        check_batch(x, "noise", params.noise)
        if params.noise.shape != x.shape:
            raise ValueError(
                f"params.noise must have the shape of x {tuple(x.shape)}, "
                f"got {tuple(params.noise.shape)}"
            )
        return x + self.std * params.noise

    def extra_repr(self) -> str:
        return f"std={self.std}"


# --------------------------------------------------------------------------------------------
# Random resized crop
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class CropParams:
    """Parameters of :class:`RandomResizedCrop`: one crop box per sample.

    Coordinates are normalized: ``-1`` and ``1`` are the left/top and right/bottom image edges.

    Attributes:
        center: box centre ``(x, y)`` in normalized coordinates, ``(B, 2)``.
        size: box width and height as fractions of the image width and height, in ``(0, 1]``,
            ``(B, 2)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import CropParams, RandomResizedCrop
        >>> x = torch.randn(3, 1, 8, 8)
        >>> params = RandomResizedCrop().sample(x, torch.Generator().manual_seed(0))
        >>> params.center.shape, params.size.shape
        (torch.Size([3, 2]), torch.Size([3, 2]))
        >>> whole = CropParams(center=torch.zeros(3, 2), size=torch.ones(3, 2))
        >>> torch.allclose(RandomResizedCrop().transform(x, whole), x, atol=1e-5)
        True
    """

    center: Tensor
    size: Tensor


class RandomResizedCrop(InputPerturbation[CropParams]):
    """Crop a random box of every image and resize it back to the full image size.

    For each sample the crop covers a fraction ``s ~ U(scale)`` of the image area with aspect
    ratio (width / height, in pixels) ``r = exp(U(log ratio[0], log ratio[1]))``: its width and
    height, as fractions of the image sides, are ``w = sqrt(s r H / W)`` and
    ``h = sqrt(s W / (r H))``, each clipped to ``1`` (torchvision redraws instead; clipping keeps
    one draw per sample). The centre is uniform among the positions that keep the box inside the
    image. The box is resampled bilinearly (``affine_grid`` / ``grid_sample``, so gradients reach
    ``x``) to the input size: ``T(x)(u, v) = x(w u + c_x, h v + c_y)`` in normalized coordinates.

    Args:
        scale: range of the area fraction, ``0 < scale[0] <= scale[1] <= 1``.
        ratio: range of the aspect ratio, ``0 < ratio[0] <= ratio[1]``.

    Raises:
        ValueError: a range out of its bounds or reversed.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import RandomResizedCrop
        >>> op = RandomResizedCrop(scale=(0.5, 1.0))
        >>> op(torch.randn(2, 3, 16, 16), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__()
        if len(scale) != 2:
            raise ValueError(f"scale must be a pair (min, max), got {scale!r}")
        if len(ratio) != 2:
            raise ValueError(f"ratio must be a pair (min, max), got {ratio!r}")
        s0, s1 = (_number("scale", s) for s in scale)
        if not 0 < s0 <= s1 <= 1:
            raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {scale!r}")
        r0, r1 = (_number("ratio", r) for r in ratio)
        if not 0 < r0 <= r1:
            raise ValueError(f"ratio must satisfy 0 < ratio[0] <= ratio[1], got {ratio!r}")
        self.scale = (s0, s1)
        self.ratio = (r0, r1)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> CropParams:
        check_images(x)
        b, _, h, w = x.shape
        area = uniform((b,), self.scale[0], self.scale[1], x, generator)
        log_r = uniform((b,), math.log(self.ratio[0]), math.log(self.ratio[1]), x, generator)
        r = log_r.exp()
        size = torch.stack(
            ((area * r * h / w).sqrt().clamp(max=1.0), (area * w / (r * h)).sqrt().clamp(max=1.0)),
            dim=1,
        )
        center = uniform((b, 2), -1.0, 1.0, x, generator) * (1.0 - size)
        return CropParams(center=center, size=size)

    def transform(self, x: Tensor, params: CropParams) -> Tensor:
        check_batch(x, "center", params.center)
        check_batch(x, "size", params.size)
        zero = torch.zeros_like(params.size[:, 0])
        theta = torch.stack(
            (
                torch.stack((params.size[:, 0], zero, params.center[:, 0]), dim=1),
                torch.stack((zero, params.size[:, 1], params.center[:, 1]), dim=1),
            ),
            dim=1,
        ).to(x.dtype)
        return _warp(x, theta, "border")

    def extra_repr(self) -> str:
        return f"scale={self.scale}, ratio={self.ratio}"


# --------------------------------------------------------------------------------------------
# Horizontal flip
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class FlipParams:
    """Parameters of :class:`RandomHorizontalFlip`.

    Attributes:
        flip: whether each sample is flipped, boolean ``(B,)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import FlipParams, RandomHorizontalFlip
        >>> x = torch.arange(4.0).view(2, 1, 1, 2)
        >>> RandomHorizontalFlip().transform(x, FlipParams(flip=torch.tensor([True, False])))
        tensor([[[[1., 0.]]],
        <BLANKLINE>
        <BLANKLINE>
                [[[2., 3.]]]])
    """

    flip: Tensor


class RandomHorizontalFlip(InputPerturbation[FlipParams]):
    """Mirror each image left-right with probability ``p``, independently per sample.

    ``T(x)_b = flip_W(x_b)`` if ``flip_b`` else ``x_b``, with ``flip_b ~ Bernoulli(p)``.

    Args:
        p: probability of flipping a sample, in ``[0, 1]``.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import RandomHorizontalFlip
        >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
        >>> RandomHorizontalFlip(p=1.0)(x).flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _number("p", p, rules.number_in(0.0, 1.0))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> FlipParams:
        check_images(x)
        return FlipParams(flip=bernoulli((x.shape[0],), self.p, x, generator))

    def transform(self, x: Tensor, params: FlipParams) -> Tensor:
        check_batch(x, "flip", params.flip)
        return torch.where(params.flip.bool().view(-1, 1, 1, 1), x.flip(-1), x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------------------
# Random affine: rotation and translation
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class AffineParams:
    """Parameters of :class:`RandomAffine`.

    Attributes:
        angle: rotation of each image, in degrees, ``(B,)``.
        translate: shift of each image ``(dx, dy)`` as fractions of its width and height,
            ``(B, 2)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import RandomAffine
        >>> params = RandomAffine(degrees=10).sample(torch.randn(4, 1, 8, 8))
        >>> params.angle.shape, bool(params.angle.abs().max() <= 10)
        (torch.Size([4]), True)
    """

    angle: Tensor
    translate: Tensor


class RandomAffine(InputPerturbation[AffineParams]):
    """A small random rotation about the image centre followed by a random translation.

    Per sample, ``a ~ U(-degrees, degrees)`` and ``(t_x, t_y) ~ U(-translate, translate)^2``.
    In pixel coordinates centred on the image, the output at ``p`` is the input at
    ``R(-a) (p - (t_x W, t_y H))`` (so the content is rotated by ``a`` and shifted by
    ``(t_x W, t_y H)`` pixels), resampled bilinearly with ``affine_grid`` / ``grid_sample``;
    the rotation is exact in pixels for non-square images too. Points that fall outside the
    image are filled as ``padding_mode`` says (``"zeros"``: the mean of normalized images).

    Args:
        degrees: largest rotation, in ``[0, 180]`` degrees.
        translate: largest shift, as a fraction of the image side, in ``[0, 1]``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Raises:
        ValueError: an argument outside its range.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import RandomAffine
        >>> op = RandomAffine(degrees=15, translate=0.1)
        >>> op(torch.randn(2, 3, 16, 16), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self, degrees: float = 15.0, translate: float = 0.1, padding_mode: PaddingMode = "zeros"
    ) -> None:
        super().__init__()
        self.degrees = _number("degrees", degrees, rules.number_in(0.0, 180.0))
        self.translate = _number("translate", translate, rules.number_in(0.0, 1.0))
        check(rules.one_of(_PADDING_MODES), "padding_mode", padding_mode)
        self.padding_mode: PaddingMode = padding_mode

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> AffineParams:
        check_images(x)
        b = x.shape[0]
        angle = uniform((b,), -self.degrees, self.degrees, x, generator)
        translate = uniform((b, 2), -self.translate, self.translate, x, generator)
        return AffineParams(angle=angle, translate=translate)

    def transform(self, x: Tensor, params: AffineParams) -> Tensor:
        check_batch(x, "angle", params.angle)
        check_batch(x, "translate", params.translate)
        h, w = x.shape[-2:]
        a = torch.deg2rad(params.angle.to(x.dtype))
        cos, sin = a.cos(), a.sin()
        # M = D^-1 R(-a) D with D = diag(W/2, H/2): R(-a) expressed in normalized coordinates.
        m = torch.stack(
            (torch.stack((cos, sin * (h / w)), dim=1), torch.stack((-sin * (w / h), cos), dim=1)),
            dim=1,
        )
        shift = 2.0 * params.translate.to(x.dtype)  # the shift in normalized coordinates
        offset = -(m @ shift.unsqueeze(-1))
        theta = torch.cat((m, offset), dim=2)
        return _warp(x, theta, self.padding_mode)

    def extra_repr(self) -> str:
        return (
            f"degrees={self.degrees}, translate={self.translate}, "
            f"padding_mode={self.padding_mode!r}"
        )


# --------------------------------------------------------------------------------------------
# Cutout / random erasing
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class CutoutParams:
    """Parameters of :class:`Cutout`.

    Attributes:
        boxes: erased box of each sample as pixel bounds ``(top, left, bottom, right)``, bottom
            and right exclusive, clipped to the image, ``(B, 4)`` integer.
        active: whether each sample is erased at all, boolean ``(B,)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Cutout, CutoutParams
        >>> x = torch.ones(1, 1, 4, 4)
        >>> params = CutoutParams(boxes=torch.tensor([[0, 0, 2, 2]]), active=torch.tensor([True]))
        >>> int(Cutout().transform(x, params).sum())  # a 2x2 box of the 16 pixels erased
        12
    """

    boxes: Tensor
    active: Tensor


class Cutout(InputPerturbation[CutoutParams]):
    """Erase a random box of each image (cutout, DeVries and Taylor 2017; random erasing).

    Each sample is erased with probability ``p``: the pixels of a box of side
    ``(h, w) = (round(size H), round(size W))`` (a float ``size``) or ``(size, size)`` pixels
    (an int ``size``), centred at a uniform random pixel and clipped at the image border (as in
    the original cutout, so boxes near the border are smaller), are set to ``fill`` in every
    channel: ``T(x) = where(mask, fill, x)``. Gradients reach the pixels that are kept.

    Args:
        size: box side as a fraction of the image side (a float in ``(0, 1]``) or in pixels
            (an int ``>= 1``).
        p: probability of erasing a sample, in ``[0, 1]``.
        fill: the value written into the box (``0`` is the mean of normalized images).

    Raises:
        ValueError: ``size``, ``p`` or ``fill`` out of range.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Cutout
        >>> x = torch.ones(1, 1, 8, 8)
        >>> y = Cutout(size=4)(x, torch.Generator().manual_seed(0))
        >>> 0 < int((y == 0).sum()) <= 16
        True
    """

    def __init__(self, size: float | int = 0.25, p: float = 1.0, fill: float = 0.0) -> None:
        super().__init__()
        in_pixels = isinstance(size, int) and not isinstance(size, bool)
        check(
            rules.int_in(1) if in_pixels else rules.number_in(0.0, 1.0, open_low=True), "size", size
        )
        self.size: float | int = size
        self.p = _number("p", p, rules.number_in(0.0, 1.0))
        self.fill = _number("fill", fill)

    def _box_size(self, h: int, w: int) -> tuple[int, int]:
        if isinstance(self.size, int):
            return min(self.size, h), min(self.size, w)
        return max(1, round(self.size * h)), max(1, round(self.size * w))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> CutoutParams:
        check_images(x)
        b, _, h, w = x.shape
        bh, bw = self._box_size(h, w)
        device = sample_device(x, generator)
        boxes = _centred_boxes(bh, bw, h, w, b, device, generator)
        active = bernoulli((b,), self.p, x, generator)
        return CutoutParams(boxes=boxes.to(x.device), active=active)

    def transform(self, x: Tensor, params: CutoutParams) -> Tensor:
        inside = _box_mask(x, params.boxes, params.active)
        return torch.where(inside, torch.full_like(x, self.fill), x)

    def extra_repr(self) -> str:
        return f"size={self.size}, p={self.p}, fill={self.fill}"


# --------------------------------------------------------------------------------------------
# Photometric jitter
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class BrightnessParams:
    """Parameters of :class:`Brightness`.

    Attributes:
        shift: additive brightness shift of each sample, ``(B,)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Brightness, BrightnessParams
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> y = Brightness().transform(x, BrightnessParams(shift=torch.tensor([0.1, -0.2])))
        >>> y[:, 0, 0, 0]
        tensor([ 0.1000, -0.2000])
    """

    shift: Tensor


class Brightness(InputPerturbation[BrightnessParams]):
    """Additive brightness jitter: ``T(x)_b = x_b + s_b``, ``s_b ~ U(-magnitude, magnitude)``.

    On normalized images (zero mean, unit variance per channel) an additive shift is the natural
    brightness change; it is applied to every channel and pixel of a sample alike.
    ``magnitude = 0`` is exactly the identity.

    Args:
        magnitude: largest shift, ``>= 0``.

    Raises:
        ValueError: ``magnitude`` negative or not finite.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Brightness
        >>> op = Brightness(magnitude=0.2)
        >>> x = torch.zeros(2, 3, 4, 4)
        >>> shift = op(x, torch.Generator().manual_seed(0)).mean(dim=(1, 2, 3))
        >>> bool((shift.abs() <= 0.2).all())
        True
    """

    def __init__(self, magnitude: float = 0.2) -> None:
        super().__init__()
        self.magnitude = _number("magnitude", magnitude, rules.non_negative)

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> BrightnessParams:
        check_images(x)
        return BrightnessParams(
            shift=uniform((x.shape[0],), -self.magnitude, self.magnitude, x, generator)
        )

    def transform(self, x: Tensor, params: BrightnessParams) -> Tensor:
        check_batch(x, "shift", params.shift)
        return x + params.shift.to(x.dtype).view(-1, 1, 1, 1)

    def extra_repr(self) -> str:
        return f"magnitude={self.magnitude}"


@attrs.frozen(eq=False)
class ContrastParams:
    """Parameters of :class:`Contrast`.

    Attributes:
        factor: contrast factor of each sample, ``(B,)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Contrast, ContrastParams
        >>> x = torch.tensor([[[[0.0, 2.0]]]])
        >>> Contrast().transform(x, ContrastParams(factor=torch.tensor([0.5])))
        tensor([[[[0.5000, 1.5000]]]])
    """

    factor: Tensor


class Contrast(InputPerturbation[ContrastParams]):
    """Contrast jitter about each sample's mean.

    ``T(x)_b = m_b + c_b (x_b - m_b)``, with ``m_b`` the mean of ``x_b`` over channels and pixels
    and ``c_b ~ U(1 - magnitude, 1 + magnitude)``; it is computed as
    ``x_b + (c_b - 1)(x_b - m_b)`` so that ``magnitude = 0`` is exactly the identity. Gradients
    reach ``x`` through both terms, the mean included.

    Args:
        magnitude: largest relative contrast change, in ``[0, 1]``.

    Raises:
        ValueError: ``magnitude`` outside ``[0, 1]``.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import Contrast
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y = Contrast(magnitude=0.2)(x, torch.Generator().manual_seed(0))
        >>> torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-6)
        True
    """

    def __init__(self, magnitude: float = 0.2) -> None:
        super().__init__()
        self.magnitude = _number("magnitude", magnitude, rules.number_in(0.0, 1.0))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> ContrastParams:
        check_images(x)
        return ContrastParams(
            factor=uniform((x.shape[0],), 1.0 - self.magnitude, 1.0 + self.magnitude, x, generator)
        )

    def transform(self, x: Tensor, params: ContrastParams) -> Tensor:
        check_batch(x, "factor", params.factor)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return x + (params.factor.to(x.dtype).view(-1, 1, 1, 1) - 1.0) * (x - mean)

    def extra_repr(self) -> str:
        return f"magnitude={self.magnitude}"


# --------------------------------------------------------------------------------------------
# Mixing samples of a batch
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class MixParams:
    """Parameters of :class:`MixUp`.

    Attributes:
        partner: index of the sample each sample is mixed with, ``(B,)``.
        weight: weight of the sample itself, ``(B,)`` (1: left as it is).

    Example:
        >>> import torch
        >>> from risloss.perturb import MixParams, MixUp
        >>> x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
        >>> params = MixParams(partner=torch.tensor([1, 0]), weight=torch.tensor([0.25, 1.0]))
        >>> MixUp().transform(x, params).flatten().tolist()
        [0.75, 1.0]
    """

    partner: Tensor
    weight: Tensor


class MixUp(InputPerturbation[MixParams]):
    """Mixes samples of a batch: ``T(x)_b = w_b x_b + (1 - w_b) x_{pi(b)}``.

    Each sample is mixed, with probability ``p``, with another sample of the batch (``pi`` a
    random permutation) at a weight ``w_b ~ U(0, 1)``; the others stay as they are. Label the
    mixed images with the teacher's predictions of them, not with mixed labels: a student
    distilled on such pairs learns how the teacher's output changes between two images, where
    a pool of synthesized images is thinnest.

    Args:
        p: probability that a sample is mixed, in ``[0, 1]``.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import MixUp
        >>> x = torch.arange(4.0).view(4, 1, 1, 1)
        >>> op = MixUp(p=1.0)
        >>> params = op.sample(x, torch.Generator().manual_seed(0))
        >>> y, other = op.transform(x, params), x[params.partner]
        >>> bool(((y >= torch.minimum(x, other)) & (y <= torch.maximum(x, other))).all())
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _number("p", p, rules.number_in(0.0, 1.0))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> MixParams:
        check_images(x)
        b = x.shape[0]
        partner = torch.randperm(b, generator=generator, device=sample_device(x, generator))
        weight = uniform((b,), 0.0, 1.0, x, generator)
        mixed = bernoulli((b,), self.p, x, generator)
        return MixParams(
            partner=partner.to(x.device), weight=torch.where(mixed, weight, torch.ones_like(weight))
        )

    def transform(self, x: Tensor, params: MixParams) -> Tensor:
        check_batch(x, "partner", params.partner)
        check_batch(x, "weight", params.weight)
        w = params.weight.to(x.dtype).view(-1, 1, 1, 1)
        return w * x + (1.0 - w) * x[params.partner.to(x.device)]

    def extra_repr(self) -> str:
        return f"p={self.p}"


@attrs.frozen(eq=False)
class CutMixParams:
    """Parameters of :class:`CutMix`.

    Attributes:
        partner: index of the sample whose pixels are pasted into each sample, ``(B,)``.
        boxes: pasted box of each sample as pixel bounds ``(top, left, bottom, right)``, bottom
            and right exclusive, clipped to the image, ``(B, 4)`` integer.
        active: whether each sample is mixed at all, boolean ``(B,)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import CutMixParams
        >>> params = CutMixParams(
        ...     partner=torch.tensor([1, 0]),
        ...     boxes=torch.tensor([[0, 0, 2, 2], [0, 0, 4, 4]]),
        ...     active=torch.tensor([True, False]),
        ... )
        >>> params.kept_fraction(4, 4).tolist()  # 4 of 16 pixels replaced; the second untouched
        [0.75, 1.0]
    """

    partner: Tensor
    boxes: Tensor
    active: Tensor

    def kept_fraction(self, height: int, width: int) -> Tensor:
        """The share of each sample's own pixels left in place, ``(B,)`` float (1: unmixed)."""
        box = self.boxes.to(torch.float32)
        area = (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)
        kept = 1.0 - area / float(height * width)
        return torch.where(self.active.bool(), kept, torch.ones_like(kept))


class CutMix(InputPerturbation[CutMixParams]):
    """Pastes a box of another sample of the batch into each sample (CutMix, Yun et al. 2019).

    Each sample is mixed with probability ``p``: a partner ``pi(b)`` (``pi`` a random
    permutation) gives the pixels of a box whose area is a share ``1 - lam`` of the image,
    ``lam ~ U(0, 1)`` (sides ``sqrt(1 - lam)`` times the image's), centred at a uniform random
    pixel and clipped at the border: ``T(x)_b = where(box_b, x_{pi(b)}, x_b)``. Where MixUp
    blends two images everywhere, CutMix keeps each pixel from one of them, so the mixed image
    holds the local patterns of both. Label the result with the teacher's prediction of it, or
    with labels mixed at :meth:`CutMixParams.kept_fraction`. Gradients reach both images.

    Args:
        p: probability that a sample is mixed, in ``[0, 1]``.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``.

    Shape:
        - Input: ``(B, C, H, W)``.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import CutMix
        >>> x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
        >>> op = CutMix(p=1.0)
        >>> params = op.sample(x, torch.Generator().manual_seed(0))
        >>> y = op.transform(x, params)
        >>> bool(((y == 0) | (y == 1)).all())  # every pixel comes from one of the two images
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _number("p", p, rules.number_in(0.0, 1.0))

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> CutMixParams:
        check_images(x)
        b, _, h, w = x.shape
        device = sample_device(x, generator)
        partner = torch.randperm(b, generator=generator, device=device)
        side = torch.sqrt(1.0 - torch.rand((b,), generator=generator, device=device))
        bh, bw = (side * h).round().long(), (side * w).round().long()
        boxes = _centred_boxes(bh, bw, h, w, b, device, generator)
        active = bernoulli((b,), self.p, x, generator)
        return CutMixParams(partner=partner.to(x.device), boxes=boxes.to(x.device), active=active)

    def transform(self, x: Tensor, params: CutMixParams) -> Tensor:
        check_batch(x, "partner", params.partner)
        inside = _box_mask(x, params.boxes, params.active)
        return torch.where(inside, x[params.partner.to(x.device)], x)

    def extra_repr(self) -> str:
        return f"p={self.p}"
