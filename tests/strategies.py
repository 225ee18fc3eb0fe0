"""Hypothesis strategies shared by the test suite.

Tensors are drawn as nested lists of bounded floats and converted with ``torch.tensor``, so
every example is reproducible from hypothesis' own randomness (no torch RNG involved).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from risloss.functional import BNStatistics

__all__ = [
    "bn_statistics",
    "class_labels",
    "feature_pairs",
    "logit_pairs",
    "logits",
    "shapes",
    "temperatures",
    "tensors",
]


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=low, max_value=high, allow_nan=False, allow_infinity=False, allow_subnormal=False
    )


@st.composite
def tensors(
    draw: st.DrawFn,
    shape: tuple[int, ...],
    *,
    low: float = -10.0,
    high: float = 10.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A tensor of the given shape with finite entries in ``[low, high]``."""
    numel = 1
    for size in shape:
        numel *= size
    values = draw(st.lists(_floats(low, high), min_size=numel, max_size=numel))
    return torch.tensor(values, dtype=dtype).reshape(shape)


def shapes(
    *, min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4
) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes with ``min_dims..max_dims`` dimensions of ``min_side..max_side`` each."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(
        tuple
    )


def temperatures() -> st.SearchStrategy[float]:
    """Softmax temperatures in ``[0.25, 8]``."""
    return _floats(0.25, 8.0)


@st.composite
def logits(
    draw: st.DrawFn,
    *,
    min_batch: int = 1,
    max_batch: int = 5,
    min_classes: int = 2,
    max_classes: int = 6,
    scale: float = 8.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Logits ``(B, C)`` with entries in ``[-scale, scale]``."""
    batch = draw(st.integers(min_batch, max_batch))
    classes = draw(st.integers(min_classes, max_classes))
    return draw(tensors((batch, classes), low=-scale, high=scale, dtype=dtype))


@st.composite
def logit_pairs(
    draw: st.DrawFn,
    *,
    max_leading_dims: int = 2,
    max_classes: int = 6,
    scale: float = 8.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two logit tensors of one shape ``(..., C)``: 0 to ``max_leading_dims`` leading dims."""
    leading = draw(shapes(min_dims=0, max_dims=max_leading_dims, max_side=4))
    classes = draw(st.integers(2, max_classes))
    shape = (*leading, classes)
    p = draw(tensors(shape, low=-scale, high=scale, dtype=dtype))
    q = draw(tensors(shape, low=-scale, high=scale, dtype=dtype))
    return p, q


@st.composite
def feature_pairs(
    draw: st.DrawFn,
    *,
    max_batch: int = 4,
    max_feature_dims: int = 3,
    scale: float = 10.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature tensors of one shape ``(B, ...)``, 1 to ``max_feature_dims`` trailing dims."""
    batch = draw(st.integers(1, max_batch))
    trailing = draw(shapes(min_dims=1, max_dims=max_feature_dims, max_side=4))
    shape = (batch, *trailing)
    a = draw(tensors(shape, low=-scale, high=scale, dtype=dtype))
    b = draw(tensors(shape, low=-scale, high=scale, dtype=dtype))
    return a, b


def class_labels(batch: int, classes: int) -> st.SearchStrategy[torch.Tensor]:
    """Integer class indices ``(batch,)`` in ``[0, classes)``."""
    return st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch).map(
        lambda values: torch.tensor(values, dtype=torch.long)
    )


@st.composite
def bn_statistics(
    draw: st.DrawFn,
    *,
    max_layers: int = 4,
    max_channels: int = 5,
    dtype: torch.dtype = torch.float64,
) -> BNStatistics:
    """A :class:`BNStatistics` of 1 to ``max_layers`` layers with non-negative variances."""
    layers = draw(st.integers(1, max_layers))
    channels = [draw(st.integers(1, max_channels)) for _ in range(layers)]

    def means() -> tuple[torch.Tensor, ...]:
        return tuple(draw(tensors((c,), low=-5.0, high=5.0, dtype=dtype)) for c in channels)

    def variances() -> tuple[torch.Tensor, ...]:
        return tuple(draw(tensors((c,), low=0.0, high=5.0, dtype=dtype)) for c in channels)

    return BNStatistics(
        names=tuple(f"layer{i}" for i in range(layers)),
        batch_means=means(),
        batch_vars=variances(),
        running_means=means(),
        running_vars=variances(),
    )
