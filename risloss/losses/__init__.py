"""Loss modules: each holds validated configuration and calls a :mod:`risloss.functional` twin."""

from risloss.losses._bns import BNStatisticsLoss
from risloss.losses._correlation import LabelCorrelationPenalty
from risloss.losses._divergence import PredictionDivergence
from risloss.losses._feature import FeatureInconsistency
from risloss.losses._robustness import (
    MODES,
    Mode,
    RobustnessConfig,
    RobustnessLoss,
    RobustnessParts,
    noise_threshold,
)

__all__ = [
    "MODES",
    "BNStatisticsLoss",
    "FeatureInconsistency",
    "LabelCorrelationPenalty",
    "PredictionDivergence",
    "RobustnessConfig",
    "Mode",
    "RobustnessLoss",
    "RobustnessParts",
    "noise_threshold",
]
