"""The architectures risloss builds by name: one registry that every layer reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import nn

from risloss.models._resnet import resnet8, resnet20

__all__ = ["ARCHITECTURES"]

ARCHITECTURES: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {"resnet8": resnet8, "resnet20": resnet20}
)
"""Architecture name -> factory ``(num_classes=, in_channels=, image_size=) -> nn.Module``.

The names a distillation student (``TrainConfig.student``), ``risloss train-teacher --arch``
and a shipped teacher's recorded ``arch`` may take, in this order.

Example:
    >>> from risloss.models import ARCHITECTURES
    >>> list(ARCHITECTURES)
    ['resnet8', 'resnet20']
    >>> ARCHITECTURES["resnet8"](num_classes=10, in_channels=1, image_size=28).image_size
    28
"""
