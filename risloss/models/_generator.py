"""The conditional generator of GDFQ (Xu et al., ECCV 2020), used by every data-free trainer."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Generator"]


class Generator(nn.Module):
    """Maps Gaussian noise and a label to an image (GDFQ's architecture).

    The label is embedded (a learned ``num_classes x latent_dim`` table) and multiplied
    element-wise with the noise ``z``; a linear layer maps the result to a
    ``base_channels x (image_size/4)^2`` tensor, which is upsampled twice (BN, upsample x2,
    conv3x3-BN-LeakyReLU(0.2), upsample x2, conv3x3-BN-LeakyReLU(0.2), conv3x3, tanh) and
    finally standardized by a BatchNorm without affine parameters, so the images have roughly
    the zero-mean, unit-variance statistics of normalized real data.

    Soft labels are supported: a ``(B, num_classes)`` float tensor of class weights is embedded
    as the weighted sum of the class embeddings.

    Args:
        num_classes: number of classes of the teacher.
        image_size: side of the square output images; must be divisible by 4.
        channels: channels of the output images.
        latent_dim: size of the noise vector ``z``.
        base_channels: width of the first feature map (GDFQ uses 128).

    Shape:
        - ``z``: ``(B, latent_dim)``; ``labels``: ``(B,)`` integers or ``(B, num_classes)`` floats.
        - Output: ``(B, channels, image_size, image_size)``.

    Raises:
        ValueError: a non-positive size or an ``image_size`` not divisible by 4.

    Example:
        >>> import torch
        >>> from risloss.models import Generator
        >>> g = Generator(num_classes=10, image_size=28, channels=1)
        >>> z = torch.randn(4, g.latent_dim)
        >>> g(z, torch.tensor([0, 1, 2, 3])).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        latent_dim: int = 100,
        base_channels: int = 128,
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
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels = channels
        self.latent_dim = latent_dim
        self.init_size = image_size // 4
        c = base_channels
        self.label_embedding = nn.Embedding(num_classes, latent_dim)
        self.fc = nn.Linear(latent_dim, c * self.init_size**2)
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
        h = self.fc(self.embed(labels) * z)
        h = h.view(z.shape[0], -1, self.init_size, self.init_size)
        h = self.up1(self.bn0(h))
        h = self.up2(self.act1(self.bn1(self.conv1(h))))
        h = self.act2(self.bn2(self.conv2(h)))
        return self.out_norm(torch.tanh(self.conv3(h)))

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
