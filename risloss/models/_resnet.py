"""CIFAR-style residual networks (He et al., 2016, section 4.2) for small images."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CifarResNet", "resnet8", "resnet20"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection.

    Each ReLU is its own module (``relu1``, ``relu2``) so that activation quantizers can be
    attached after every one of them.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample: nn.Module
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class CifarResNet(nn.Module):
    """A CIFAR-style ResNet: a 3x3 stem, three stages of basic blocks, pooling, a linear head.

    Args:
        blocks_per_stage: number of basic blocks in each of the three stages (``3`` gives
            ResNet-20, ``1`` gives ResNet-8).
        num_classes: number of output classes.
        in_channels: channels of the input image (1 for grayscale, 3 for RGB).
        width: channels of the first stage; the next two stages use twice and four times as many.
        image_size: the side of the (square) input images the model is meant for. The network
            itself is size-agnostic (global average pooling); the value is recorded so that a
            generator can be sized from the teacher.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, num_classes)`` logits.

    Raises:
        ValueError: a size argument below 1.

    Example:
        >>> import torch
        >>> from risloss.models import CifarResNet
        >>> model = CifarResNet(2, num_classes=5, in_channels=1, width=8, image_size=16)
        >>> model(torch.randn(3, 1, 16, 16)).shape
        torch.Size([3, 5])
    """

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        for name, value in (
            ("blocks_per_stage", blocks_per_stage),
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("width", width),
            ("image_size", image_size),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        planes = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        in_planes = width
        for stage, p in enumerate(planes):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, p, stride))
                in_planes = p
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
    """ResNet-20 (0.27 M parameters): three stages of three basic blocks.

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input images.
        image_size: side of the square input images (recorded on the model, see
            :class:`CifarResNet`).

    Returns:
        A randomly initialized :class:`CifarResNet`.

    Example:
        >>> import torch
        >>> from risloss.models import resnet20
        >>> model = resnet20(num_classes=10, in_channels=1, image_size=28)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return CifarResNet(3, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def resnet8(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
    """ResNet-8 (0.08 M parameters): three stages of one basic block.

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input images.
        image_size: side of the square input images (recorded on the model, see
            :class:`CifarResNet`).

    Returns:
        A randomly initialized :class:`CifarResNet`.

    Example:
        >>> import torch
        >>> from risloss.models import resnet8
        >>> resnet8(in_channels=1)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return CifarResNet(1, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
