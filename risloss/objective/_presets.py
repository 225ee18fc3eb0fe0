"""Presets: RIS's and GDFQ's objectives as compositions of named, weighted terms."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from risloss.functional import PairSelection
from risloss.hooks import resolve_layers
from risloss.losses import RobustnessLoss
from risloss.objective._config import RISConfig
from risloss.objective._terms import (
    BNSTerm,
    CorrelationTerm,
    CrossEntropyTerm,
    RobustnessTerm,
    SimilarityTerm,
    Term,
)

__all__ = ["Terms", "ris_terms"]

Terms = dict[str, tuple[float, Term]]
"""Named, weighted terms in the order they are summed: ``{name: (weight, term)}``."""


def has_penultimate(teacher: nn.Module) -> bool:
    """Whether ``teacher`` ends in an ``nn.Linear`` (whose input is the penultimate feature)."""
    try:
        resolve_layers(teacher, "penultimate")
    except ValueError:
        return False
    return True


def composed_terms(
    teacher: nn.Module,
    *,
    bns_weight: float,
    robustness: RobustnessLoss | None,
    robustness_weight: float,
    diversity_weight: float,
    correlation_pairs: PairSelection,
    feature_diversity_weight: float,
    bns_momentum: float = 0.0,
) -> Terms:
    """CE, then BNS (weight > 0), robustness (given), the penalty (weight > 0) and the
    within-class similarity (a figure at weight 0, left out on a teacher without a final
    ``nn.Linear``): the terms of the objective before terms were named."""
    terms: Terms = {"ce": (1.0, CrossEntropyTerm())}
    if bns_weight > 0:
        terms["bns"] = (bns_weight, BNSTerm(momentum=bns_momentum))
    if robustness is not None:
        terms["rob"] = (robustness_weight, RobustnessTerm(robustness))
    if diversity_weight > 0:
        terms["div"] = (diversity_weight, CorrelationTerm(correlation_pairs))
    if has_penultimate(teacher):
        terms["sim"] = (feature_diversity_weight, SimilarityTerm())
    elif feature_diversity_weight > 0:
        raise ValueError(
            "feature_diversity_weight > 0 needs a teacher whose last layer is an nn.Linear "
            "(its input is the penultimate feature); set feature_diversity_weight=0"
        )
    return terms


def ris_terms(
    config: RISConfig,
    teacher: nn.Module,
    *,
    generator: torch.Generator | None = None,
    input_statistics: tuple[Any, Any] | None = None,
) -> Terms:
    """The terms of the objective a :class:`RISConfig` describes (``config.baseline()``: GDFQ's).

    In summation order, each under the name its figure is logged with (``g_<name>``):

    - ``"ce"`` (weight 1): :class:`CrossEntropyTerm`;
    - ``"bns"`` (``bns_weight``, when > 0): :class:`BNSTerm` (``momentum=bns_momentum``);
    - ``"rob"`` (``robustness_weight``, when > 0): :class:`RobustnessTerm` on
      ``config.robustness_loss(teacher, generator=generator)``;
    - ``"div"`` (``diversity_weight``, when the penalty is on): :class:`CorrelationTerm`;
    - ``"sim"`` (``feature_diversity_weight``; at 0 a figure): :class:`SimilarityTerm`, on a
      teacher whose last layer is an ``nn.Linear``.

    Add terms of your own to the returned dict (they are summed after these) and pass it to
    :class:`SynthesisObjective`.

    Args:
        config: the weights and options.
        teacher: the frozen classifier.
        generator: the source of the robustness loss's perturbation draws.
        input_statistics: ``(scale, shift)`` of a teacher whose inputs are not standardized,
            as :meth:`RISConfig.robustness_loss` takes them.

    Returns:
        ``{name: (weight, term)}``, a new dict.

    Raises:
        ValueError: ``feature_diversity_weight > 0`` on a teacher without a final
            ``nn.Linear``.

    Example:
        >>> from risloss import RISConfig
        >>> from risloss.models import resnet8
        >>> from risloss.objective import ris_terms
        >>> teacher = resnet8(in_channels=1).eval().requires_grad_(False)
        >>> list(ris_terms(RISConfig(diversity="penalty"), teacher))
        ['ce', 'bns', 'rob', 'div', 'sim']
        >>> {name: w for name, (w, _) in ris_terms(RISConfig().baseline(), teacher).items()}
        {'ce': 1.0, 'bns': 0.1, 'sim': 0.0}
    """
    if not isinstance(config, RISConfig):
        raise TypeError(f"config must be a RISConfig, got {type(config).__name__}")
    return composed_terms(
        teacher,
        bns_weight=config.bns_weight,
        robustness=config.robustness_loss(
            teacher, generator=generator, input_statistics=input_statistics
        ),
        robustness_weight=config.robustness_weight,
        diversity_weight=config.diversity_weight if config.uses_penalty else 0.0,
        correlation_pairs=config.correlation_pairs,
        feature_diversity_weight=config.feature_diversity_weight,
        bns_momentum=config.bns_momentum,
    )
