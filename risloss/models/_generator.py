"""The conditional generator of GDFQ (Xu et al., ECCV 2020), used by every data-free trainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

__all__ = ["CONDITIONINGS", "OUTPUT_BOUNDS", "Conditioning", "Generator", "OutputBound"]

Conditioning = Literal["concat", "multiply"]
"""How the label enters the generator: concatenated to the noise, or multiplied with it."""
CONDITIONINGS: tuple[str, ...] = get_args(Conditioning)
"""The allowed values of ``Generator(conditioning=...)``."""

OutputBound = Literal["clamp", "tanh"]
"""How the images are kept to ``output_range``: clipped, or squashed smoothly."""
OUTPUT_BOUNDS: tuple[str, ...] = get_args(OutputBound)
"""The allowed values of ``Generator(output_bound=...)``."""


def bounded(
    x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, how: OutputBound
) -> torch.Tensor:
    """``x`` kept to ``[low, high]`` (broadcast): clipped (``"clamp"``), or squashed with
    ``m + r * tanh((x - m) / r)``, ``m`` the middle and ``r`` the half width (``"tanh"``)."""
    if how == "tanh":
        middle, half = (high + low) / 2, (high - low) / 2
        return middle + half * torch.tanh((x - middle) / half)
    return x.clamp(low, high)


class Generator(nn.Module):
    """Maps Gaussian noise and a label to an image (GDFQ's architecture, two changes).

    The label is embedded (a learned ``num_classes x latent_dim`` table) and joined with the
    noise ``z``; a linear layer maps the result to a ``base_channels x (image_size/4)^2``
    tensor, which is upsampled twice (BN, upsample x2, conv3x3-BN-LeakyReLU(0.2), upsample x2,
    conv3x3-BN-LeakyReLU(0.2), conv3x3, tanh) and standardized by a BatchNorm without affine
    parameters. A learnable per-channel scale and shift then set the images' statistics.

    The two changes from GDFQ, both measured in the benchmarks (``benchmarks/synthesis.py``):

    - ``conditioning="concat"`` (the default) concatenates the embedding to ``z``. GDFQ
      multiplies them (``"multiply"``): with ``z`` symmetric around 0 the product carries the
      class only in its magnitudes, not linearly, and the generator learns the classes many
      times slower.
    - the output scale and shift start at ``output_std`` and ``output_mean`` (by default 1 and
      0: the identity, the zero-mean, unit-variance statistics of standardized data) and are
      trained, so a teacher that expects another input range (``[0, 1]`` images it normalizes
      itself) can be matched. :meth:`param_groups` gives them their own learning rate.

    With ``output_range=(low, high)`` the images are kept to that box (per channel): the
    values a teacher's inputs can take, for instance pixels in ``[0, 1]`` after its
    normalization. A teacher never saw values beyond them, and a student trained on images that
    hold them learns features real images never show (measured in the benchmarks).
    ``output_bound="clamp"`` (the default) clips them, so a clipped pixel gets no gradient;
    ``"tanh"`` squashes them smoothly, ``m + r * tanh((x - m) / r)`` with ``m`` the box's
    middle and ``r`` its half width: the identity's slope at the middle, every pixel inside the
    box, and a pixel at or past the bound still gets a gradient (it fades only several half
    widths beyond).

    Soft labels are supported: a ``(B, num_classes)`` float tensor of class weights is embedded
    as the weighted sum of the class embeddings.

    Args:
        num_classes: number of classes of the teacher.
        image_size: side of the square output images; must be divisible by 4.
        channels: channels of the output images.
        latent_dim: size of the noise vector ``z``.
        base_channels: width of the first feature map (GDFQ uses 128).
        conditioning: ``"concat"`` or ``"multiply"`` (GDFQ's).
        output_mean: initial per-channel shift of the images (one value or ``channels``).
        output_std: initial per-channel scale of the images, positive.
        output_range: ``(low, high)``, each one value or one per channel (``low < high``), to
            keep the images in; ``None`` (the default) leaves them unbounded.
        output_bound: ``"clamp"`` or ``"tanh"``: how ``output_range`` keeps them there.

    Shape:
        - ``z``: ``(B, latent_dim)``; ``labels``: ``(B,)`` integers or ``(B, num_classes)`` floats.
        - Output: ``(B, channels, image_size, image_size)``.

    Raises:
        ValueError: a non-positive size, an ``image_size`` not divisible by 4, an unknown
            ``conditioning``, or output statistics of the wrong length or a non-positive std.

    Example:
        >>> import torch
        >>> from risloss.models import Generator
        >>> g = Generator(num_classes=10, image_size=28, channels=1)
        >>> z = torch.randn(4, g.latent_dim)
        >>> g(z, torch.tensor([0, 1, 2, 3])).shape
        torch.Size([4, 1, 28, 28])
        >>> g01 = Generator(num_classes=10, image_size=28, channels=1, output_mean=0.29,
        ...                 output_std=0.35)  # a teacher that takes [0, 1] images
        >>> g01.output_shift.tolist(), g01.output_scale.tolist()
        ([0.28999999165534973], [0.3499999940395355])
    """

    output_low: torch.Tensor | None
    output_high: torch.Tensor | None

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        latent_dim: int = 100,
        base_channels: int = 128,
        conditioning: Conditioning = "concat",
        output_mean: float | Sequence[float] = 0.0,
        output_std: float | Sequence[float] = 1.0,
        output_range: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
        output_bound: OutputBound = "clamp",
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("channels", channels),
            ("latent_dim", latent_dim),
            ("base_channels", base_channels),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if output_bound not in OUTPUT_BOUNDS:
            raise ValueError(f"output_bound must be one of {OUTPUT_BOUNDS}, got {output_bound!r}")
        mean = _per_channel(output_mean, channels, "output_mean")
        std = _per_channel(output_std, channels, "output_std")
        if not bool((std > 0).all()):
            raise ValueError(f"output_std must be positive, got {std.tolist()}")
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels = channels
        self.latent_dim = latent_dim
        self.conditioning = conditioning
        self.init_size = image_size // 4
        c = base_channels
        self.label_embedding = nn.Embedding(num_classes, latent_dim)
        fc_in = 2 * latent_dim if conditioning == "concat" else latent_dim
        self.fc = nn.Linear(fc_in, c * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(c)
        self.up1 = nn.Upsample(scale_factor=2)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c, eps=0.8)
        self.act1 = nn.LeakyReLU(0.2)
        self.up2 = nn.Upsample(scale_factor=2)
        self.conv2 = nn.Conv2d(c, c // 2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c // 2, eps=0.8)
        self.act2 = nn.LeakyReLU(0.2)
        self.conv3 = nn.Conv2d(c // 2, channels, 3, padding=1)
        self.out_norm = nn.BatchNorm2d(channels, affine=False)
        self.output_scale = nn.Parameter(std)
        self.output_shift = nn.Parameter(mean)
        low = high = None
        if output_range is not None:
            if len(output_range) != 2:
                raise ValueError(f"output_range must be (low, high), got {output_range!r}")
            low = _per_channel(output_range[0], channels, "output_range low")
            high = _per_channel(output_range[1], channels, "output_range high")
            if not bool((low < high).all()):
                raise ValueError(
                    f"output_range must have low < high per channel, got {low.tolist()} and "
                    f"{high.tolist()}"
                )
        # Not part of the weights (a bounded and an unbounded generator share state dicts);
        # buffers, so that they follow the module to its device.
        self.register_buffer("output_low", low, persistent=False)
        self.register_buffer("output_high", high, persistent=False)
        self.clamp_output = output_range is not None
        """Whether :meth:`forward` keeps the images to ``output_range`` (set at construction)."""
        self.output_bound: OutputBound = output_bound

    def param_groups(self, lr: float, *, output_lr_scale: float = 10.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the network at ``lr``, the output statistics faster.

        The output scale and shift move the images' range as a whole; at the network's
        learning rate they would need hundreds of steps to travel from the identity to the
        range of a ``[0, 1]`` teacher.

        Args:
            lr: learning rate of the network.
            output_lr_scale: multiple of ``lr`` for the output scale and shift (0 freezes them).

        Returns:
            Two groups for :class:`torch.optim.Adam` (or any optimizer).

        Example:
            >>> import torch
            >>> from risloss.models import Generator
            >>> g = Generator(num_classes=3, image_size=8, channels=1)
            >>> opt = torch.optim.Adam(g.param_groups(1e-3), betas=(0.5, 0.999))
            >>> [group["lr"] for group in opt.param_groups]
            [0.001, 0.01]
        """
        if not output_lr_scale >= 0:
            raise ValueError(f"output_lr_scale must be >= 0, got {output_lr_scale!r}")
        output = [self.output_scale, self.output_shift]
        ids = {id(p) for p in output}
        body = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": body, "lr": lr}, {"params": output, "lr": lr * output_lr_scale}]

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """Embed hard labels ``(B,)`` or soft label vectors ``(B, num_classes)``.

        A soft label is embedded as the weighted sum of its classes' embeddings.

        Args:
            labels: integer class indices ``(B,)`` or float class weights ``(B, num_classes)``.

        Returns:
            The embeddings, ``(B, latent_dim)``.

        Raises:
            ValueError: ``labels`` of the wrong shape.

        Example:
            >>> import torch
            >>> from risloss.models import Generator
            >>> g = Generator(num_classes=3, image_size=8, channels=1, latent_dim=4)
            >>> hard = g.embed(torch.tensor([0, 2]))
            >>> soft = g.embed(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
            >>> torch.allclose(hard, soft)
            True
        """
        if labels.dtype.is_floating_point:
            if labels.ndim != 2 or labels.shape[1] != self.num_classes:
                raise ValueError(
                    f"soft labels must have shape (B, {self.num_classes}), "
                    f"got {tuple(labels.shape)}"
                )
            return labels @ self.label_embedding.weight
        if labels.ndim != 1:
            raise ValueError(f"hard labels must have shape (B,), got {tuple(labels.shape)}")
        return self.label_embedding(labels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if labels.shape[0] != z.shape[0]:
            raise ValueError(
                "z and labels must have the same batch size, "
                f"got {z.shape[0]} and {labels.shape[0]}"
            )
        e = self.embed(labels)
        h = self.fc(torch.cat([z, e], dim=1) if self.conditioning == "concat" else e * z)
        h = h.view(z.shape[0], -1, self.init_size, self.init_size)
        h = self.up1(self.bn0(h))
        h = self.up2(self.act1(self.bn1(self.conv1(h))))
        h = self.act2(self.bn2(self.conv2(h)))
        x = self.out_norm(torch.tanh(self.conv3(h)))
        shape = (1, self.channels, 1, 1)
        x = x * self.output_scale.view(shape) + self.output_shift.view(shape)
        if self.clamp_output:
            assert self.output_low is not None and self.output_high is not None  # set together
            low, high = self.output_low.view(shape), self.output_high.view(shape)
            x = bounded(x, low, high, self.output_bound)
        return x

    def sample(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``z ~ N(0, I)`` (from ``generator`` if given) and synthesize images for ``labels``.

        Args:
            labels: hard ``(B,)`` or soft ``(B, num_classes)`` labels.
            generator: the source of the noise; ``None`` uses the global generator of the
                model's device.

        Returns:
            Images ``(B, channels, image_size, image_size)``.

        Example:
            >>> import torch
            >>> from risloss.models import Generator
            >>> g = Generator(num_classes=10, image_size=28, channels=1).eval()
            >>> x = g.sample(torch.arange(10), generator=torch.Generator().manual_seed(0))
            >>> x.shape
            torch.Size([10, 1, 28, 28])
        """
        device = self.fc.weight.device
        z = torch.randn(labels.shape[0], self.latent_dim, generator=generator, device=device)
        return self(z, labels.to(device))


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    values = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} must have 1 or {channels} values, got {len(values)}")
    return torch.tensor(values)
