"""One registry of every loss, for the contract suites of the functions and their modules.

A :class:`Case` pairs a configured function with its module twin and a recipe for small
differentiable inputs. Non-differentiable extras (class labels) are fixed inside the case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from risloss.functional import (
    CHANNEL_REDUCTIONS,
    CORRELATION_KINDS,
    DIVERGENCE_KINDS,
    FEATURE_KINDS,
    PAIR_SELECTIONS,
    BNStatistics,
    bn_statistics_loss,
    feature_inconsistency,
    label_correlation_penalty,
    prediction_divergence,
)
from risloss.losses import (
    BNStatisticsLoss,
    FeatureInconsistency,
    LabelCorrelationPenalty,
    PredictionDivergence,
)

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Case:
    """A configured loss: its function, its module twin, and inputs to feed both."""

    id: str
    make: Callable[[torch.dtype], Inputs]
    call: Callable[[Inputs, str], torch.Tensor]
    module: Callable[[str], nn.Module]
    call_module: Callable[[nn.Module, Inputs], torch.Tensor]
    none_shape: tuple[int, ...]


def _randn(*shape: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _divergence(kind: str) -> Case:
    return Case(
        id=f"prediction_divergence-{kind}",
        make=lambda dtype: (_randn(3, 5, seed=0, dtype=dtype), _randn(3, 5, seed=1, dtype=dtype)),
        call=lambda x, r: prediction_divergence(
            x[0],
            x[1],
            kind=kind,  # type: ignore[arg-type]
            temperature=2.0,
            reduction=r,  # type: ignore[arg-type]
        ),
        module=lambda r: PredictionDivergence(kind=kind, temperature=2.0, reduction=r),  # type: ignore[arg-type]
        call_module=lambda m, x: m(x[0], x[1]),
        none_shape=(3,),
    )


def _feature(kind: str) -> Case:
    return Case(
        id=f"feature_inconsistency-{kind}",
        make=lambda dtype: (
            _randn(3, 2, 4, seed=2, dtype=dtype),
            _randn(3, 2, 4, seed=3, dtype=dtype),
        ),
        call=lambda x, r: feature_inconsistency(x[0], x[1], kind=kind, reduction=r),  # type: ignore[arg-type]
        module=lambda r: FeatureInconsistency(kind=kind, reduction=r),  # type: ignore[arg-type]
        call_module=lambda m, x: m(x[0], x[1]),
        none_shape=(3,),
    )


_LABELS = torch.tensor([0, 0, 1, 1, 2])


def _correlation(pairs: str, kind: str) -> Case:
    labels = None if pairs == "all" else _LABELS
    return Case(
        id=f"label_correlation_penalty-{pairs}-{kind}",
        make=lambda dtype: (_randn(5, 4, seed=4, dtype=dtype),),
        call=lambda x, r: label_correlation_penalty(
            x[0],
            labels,
            pairs=pairs,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            temperature=0.5,
            reduction=r,  # type: ignore[arg-type]
        ),
        module=lambda r: LabelCorrelationPenalty(
            pairs=pairs,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            temperature=0.5,
            reduction=r,  # type: ignore[arg-type]
        ),
        call_module=lambda m, x: m(x[0], labels),
        none_shape=(5,),
    )


def _bn_inputs(dtype: torch.dtype) -> Inputs:
    # two layers of 3 and 2 channels: (mean, var, running mean, running var) per layer
    tensors = []
    for layer, channels in enumerate((3, 2)):
        seed = 10 * layer
        tensors += [
            _randn(channels, seed=seed, dtype=dtype),
            _randn(channels, seed=seed + 1, dtype=dtype).exp(),
            _randn(channels, seed=seed + 2, dtype=dtype),
            _randn(channels, seed=seed + 3, dtype=dtype).exp(),
        ]
    return tuple(tensors)


def _bn_stats(x: Inputs) -> BNStatistics:
    return BNStatistics(
        names=("bn1", "bn2"),
        batch_means=x[0::4],
        batch_vars=x[1::4],
        running_means=x[2::4],
        running_vars=x[3::4],
    )


def _bns(channel_reduction: str) -> Case:
    return Case(
        id=f"bn_statistics_loss-{channel_reduction}",
        make=_bn_inputs,
        call=lambda x, r: bn_statistics_loss(
            x[0::4],
            x[1::4],
            x[2::4],
            x[3::4],
            reduction=r,  # type: ignore[arg-type]
            channel_reduction=channel_reduction,  # type: ignore[arg-type]
        ),
        module=lambda r: BNStatisticsLoss(
            reduction=r,  # type: ignore[arg-type]
            channel_reduction=channel_reduction,  # type: ignore[arg-type]
        ),
        call_module=lambda m, x: m(_bn_stats(x)),
        none_shape=(2,),
    )


CASES: list[Case] = [
    *(_divergence(kind) for kind in DIVERGENCE_KINDS),
    *(_feature(kind) for kind in FEATURE_KINDS),
    *(_correlation(pairs, kind) for pairs in PAIR_SELECTIONS for kind in CORRELATION_KINDS),
    *(_bns(channel_reduction) for channel_reduction in CHANNEL_REDUCTIONS),
]

REDUCTIONS = ("mean", "sum", "none")

_x = torch.zeros(2, 3)
_one = [torch.zeros(2)]

# (id, call that must fail, argument named in the message, allowed values in the message)
BAD_CONFIGS: list[tuple[str, Callable[[], object], str, str]] = [
    (
        "prediction_divergence-kind",
        lambda: prediction_divergence(_x, _x, kind="cosine"),  # type: ignore[arg-type]
        "kind",
        "('l1', 'kl', 'skl', 'js')",
    ),
    (
        "prediction_divergence-reduction",
        lambda: prediction_divergence(_x, _x, reduction="avg"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "prediction_divergence-temperature",
        lambda: prediction_divergence(_x, _x, temperature=0.0),
        "temperature",
        "finite number > 0",
    ),
    (
        "PredictionDivergence-kind",
        lambda: PredictionDivergence(kind="L1"),  # type: ignore[arg-type]
        "kind",
        "('l1', 'kl', 'skl', 'js')",
    ),
    (
        "PredictionDivergence-reduction",
        lambda: PredictionDivergence(reduction=None),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "PredictionDivergence-temperature",
        lambda: PredictionDivergence(temperature=-1.0),
        "temperature",
        "finite number > 0",
    ),
    (
        "feature_inconsistency-kind",
        lambda: feature_inconsistency(_x, _x, kind="kl"),  # type: ignore[arg-type]
        "kind",
        "('cosine', 'mse', 'l1', 'nmse')",
    ),
    (
        "feature_inconsistency-reduction",
        lambda: feature_inconsistency(_x, _x, reduction="max"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "FeatureInconsistency-kind",
        lambda: FeatureInconsistency(kind="cos"),  # type: ignore[arg-type]
        "kind",
        "('cosine', 'mse', 'l1', 'nmse')",
    ),
    (
        "FeatureInconsistency-reduction",
        lambda: FeatureInconsistency(reduction="batchmean"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "label_correlation_penalty-pairs",
        lambda: label_correlation_penalty(_x, pairs="mixed"),  # type: ignore[arg-type]
        "pairs",
        "('all', 'same', 'different')",
    ),
    (
        "label_correlation_penalty-kind",
        lambda: label_correlation_penalty(_x, kind="l1"),  # type: ignore[arg-type]
        "kind",
        "('relu', 'raw', 'abs', 'square')",
    ),
    (
        "label_correlation_penalty-reduction",
        lambda: label_correlation_penalty(_x, reduction="avg"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "label_correlation_penalty-temperature",
        lambda: label_correlation_penalty(_x, temperature=float("inf")),
        "temperature",
        "finite number > 0",
    ),
    (
        "LabelCorrelationPenalty-pairs",
        lambda: LabelCorrelationPenalty(pairs="any"),  # type: ignore[arg-type]
        "pairs",
        "('all', 'same', 'different')",
    ),
    (
        "LabelCorrelationPenalty-kind",
        lambda: LabelCorrelationPenalty(kind="pos"),  # type: ignore[arg-type]
        "kind",
        "('relu', 'raw', 'abs', 'square')",
    ),
    (
        "LabelCorrelationPenalty-reduction",
        lambda: LabelCorrelationPenalty(reduction="MEAN"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "LabelCorrelationPenalty-temperature",
        lambda: LabelCorrelationPenalty(temperature=0),
        "temperature",
        "finite number > 0",
    ),
    (
        "bn_statistics_loss-reduction",
        lambda: bn_statistics_loss(_one, _one, _one, _one, reduction="avg"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "bn_statistics_loss-channel_reduction",
        lambda: bn_statistics_loss(_one, _one, _one, _one, channel_reduction="none"),  # type: ignore[arg-type]
        "channel_reduction",
        "('sum', 'mean')",
    ),
    (
        "BNStatisticsLoss-reduction",
        lambda: BNStatisticsLoss(reduction="avg"),  # type: ignore[arg-type]
        "reduction",
        "('mean', 'sum', 'none')",
    ),
    (
        "BNStatisticsLoss-channel_reduction",
        lambda: BNStatisticsLoss(channel_reduction="max"),  # type: ignore[arg-type]
        "channel_reduction",
        "('sum', 'mean')",
    ),
]
