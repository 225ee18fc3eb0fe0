"""Reference networks and the teachers shipped with risloss."""

from risloss.models._generator import (
    CONDITIONINGS,
    OUTPUT_BOUNDS,
    Conditioning,
    Generator,
    OutputBound,
)
from risloss.models._pretrained import (
    DEFAULT_TEACHER,
    list_pretrained,
    load_pretrained,
    pretrained_info,
)
from risloss.models._registry import ARCHITECTURES
from risloss.models._resnet import CifarResNet, resnet8, resnet20

__all__ = [
    "ARCHITECTURES",
    "CONDITIONINGS",
    "OUTPUT_BOUNDS",
    "Conditioning",
    "OutputBound",
    "DEFAULT_TEACHER",
    "CifarResNet",
    "Generator",
    "list_pretrained",
    "load_pretrained",
    "pretrained_info",
    "resnet8",
    "resnet20",
]
