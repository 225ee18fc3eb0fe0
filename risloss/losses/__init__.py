"""Loss modules: each holds validated configuration and calls a :mod:`risloss.functional` twin."""

from risloss.losses._bns import BNStatisticsLoss
from risloss.losses._correlation import LabelCorrelationPenalty
from risloss.losses._divergence import PredictionDivergence
from risloss.losses._feature import FeatureInconsistency
from risloss.losses._robustness import RobustnessConfig, RobustnessLoss, noise_threshold

__all__ = [
    "BNStatisticsLoss",
    "FeatureInconsistency",
    "LabelCorrelationPenalty",
    "PredictionDivergence",
    "RobustnessConfig",
    "RobustnessLoss",
    "noise_threshold",
]
