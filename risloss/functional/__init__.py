"""Pure loss functions of RIS and GDFQ; each has an ``nn.Module`` twin in :mod:`risloss.losses`.

Every function validates its configuration and inputs, never modifies its inputs, works on
any floating dtype and device, and is differentiable. Per-sample values are computed first and
combined by one ``reduction`` argument (``"mean"``, ``"sum"`` or ``"none"``).
"""

from risloss.functional._bns import (
    CHANNEL_REDUCTIONS,
    BNStatistics,
    ChannelReduction,
    batch_moments,
    bn_statistics_loss,
)
from risloss.functional._checks import NonFiniteInputError
from risloss.functional._correlation import (
    CORRELATION_KINDS,
    PAIR_SELECTIONS,
    CorrelationKind,
    PairSelection,
    label_correlation_penalty,
    prediction_correlation,
)
from risloss.functional._distill import adversarial_divergence, kd_loss, soft_cross_entropy
from risloss.functional._divergence import (
    DIVERGENCE_KINDS,
    DivergenceKind,
    prediction_divergence,
)
from risloss.functional._feature import FEATURE_KINDS, FeatureKind, feature_inconsistency
from risloss.functional._reduction import REDUCTIONS, Reduction

__all__ = [
    "adversarial_divergence",
    "kd_loss",
    "soft_cross_entropy",
    "CHANNEL_REDUCTIONS",
    "CORRELATION_KINDS",
    "DIVERGENCE_KINDS",
    "FEATURE_KINDS",
    "PAIR_SELECTIONS",
    "REDUCTIONS",
    "BNStatistics",
    "ChannelReduction",
    "CorrelationKind",
    "DivergenceKind",
    "FeatureKind",
    "NonFiniteInputError",
    "PairSelection",
    "Reduction",
    "batch_moments",
    "bn_statistics_loss",
    "feature_inconsistency",
    "label_correlation_penalty",
    "prediction_correlation",
    "prediction_divergence",
]
