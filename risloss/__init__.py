"""risloss: Robustness-Guided Image Synthesis (RIS) for data-free model compression.

The top-level namespace holds the pieces most users reach for; the subpackages hold the rest:
:mod:`risloss.functional` (pure loss functions), :mod:`risloss.losses` (their module twins),
:mod:`risloss.perturb` (input and weight perturbations), :mod:`risloss.hooks` (feature capture),
:mod:`risloss.objective` (the generator objective built from the losses),
:mod:`risloss.quant` (fake quantization), :mod:`risloss.pruning`, :mod:`risloss.models`
(reference networks, the generator, shipped teachers), :mod:`risloss.data` and
:mod:`risloss.training` (the data-free trainers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from risloss._version import __version__

if TYPE_CHECKING:  # the names below, imported on first use (importing torch takes a while)
    from risloss._eval import evaluate
    from risloss.hooks import capture_bn_statistics, capture_features
    from risloss.losses import (
        BNStatisticsLoss,
        FeatureInconsistency,
        LabelCorrelationPenalty,
        PredictionDivergence,
        RobustnessConfig,
        RobustnessLoss,
        noise_threshold,
    )
    from risloss.objective import LabelSampler, RISConfig, SynthesisObjective, SynthesisParts
    from risloss.training import TrainConfig, synthesize, train

__all__ = [
    "BNStatisticsLoss",
    "FeatureInconsistency",
    "LabelCorrelationPenalty",
    "LabelSampler",
    "PredictionDivergence",
    "RISConfig",
    "RobustnessConfig",
    "RobustnessLoss",
    "SynthesisObjective",
    "SynthesisParts",
    "TrainConfig",
    "__version__",
    "capture_bn_statistics",
    "capture_features",
    "evaluate",
    "noise_threshold",
    "synthesize",
    "train",
]

_HOMES = {
    "evaluate": "risloss._eval",
    "capture_bn_statistics": "risloss.hooks",
    "capture_features": "risloss.hooks",
    **dict.fromkeys(
        (
            "BNStatisticsLoss",
            "FeatureInconsistency",
            "LabelCorrelationPenalty",
            "PredictionDivergence",
            "RobustnessConfig",
            "RobustnessLoss",
            "noise_threshold",
        ),
        "risloss.losses",
    ),
    **dict.fromkeys(
        ("LabelSampler", "RISConfig", "SynthesisObjective", "SynthesisParts"), "risloss.objective"
    ),
    **dict.fromkeys(("TrainConfig", "synthesize", "train"), "risloss.training"),
}
"""Where each top-level name lives; it is imported on first use, so that ``import risloss``
(and the command line's start-up) does not wait for torch."""


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif not name.startswith("__"):
        try:  # a subpackage, as ``import risloss`` made them available before
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
