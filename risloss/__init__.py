"""risloss: Robustness-Guided Image Synthesis (RIS) for data-free model compression.

The top-level namespace holds the pieces most users reach for; the subpackages hold the rest:
:mod:`risloss.functional` (pure loss functions), :mod:`risloss.losses` (their module twins),
:mod:`risloss.perturb` (input and weight perturbations), :mod:`risloss.hooks` (feature capture),
:mod:`risloss.objective` (the generator objective built from the losses),
:mod:`risloss.quant` (fake quantization), :mod:`risloss.pruning`, :mod:`risloss.models`
(reference networks, the generator, shipped teachers), :mod:`risloss.data` and
:mod:`risloss.training` (the data-free trainers).
"""

from risloss._eval import evaluate
from risloss._version import __version__
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
