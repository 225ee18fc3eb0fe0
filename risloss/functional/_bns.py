"""Batch-normalization statistics alignment (the ``L_BNS`` term of GDFQ)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import attrs
import torch

from risloss.functional._checks import check_choice, check_finite, check_floating
from risloss.functional._reduction import REDUCTIONS, Reduction, reduce

__all__ = [
    "CHANNEL_REDUCTIONS",
    "BNStatistics",
    "ChannelReduction",
    "batch_moments",
    "bn_statistics_loss",
]

ChannelReduction = Literal["sum", "mean"]
"""How :func:`bn_statistics_loss` reduces the squared differences over channels."""

CHANNEL_REDUCTIONS: tuple[str, ...] = get_args(ChannelReduction)
"""The accepted values of ``channel_reduction`` (the members of :data:`ChannelReduction`)."""


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _tensors(values: Iterable[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(values)


def _all_tensors(instance: object, attribute: attrs.Attribute, value: tuple[object, ...]) -> None:
    for i, item in enumerate(value):
        if not isinstance(item, torch.Tensor):
            raise TypeError(
                f"{attribute.name}[{i}] must be a torch.Tensor, got {type(item).__name__}"
            )


def _all_names(instance: object, attribute: attrs.Attribute, value: tuple[object, ...]) -> None:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"names[{i}] must be a str, got {type(item).__name__}")
    if len(set(value)) != len(value):
        duplicates = sorted({str(n) for n in value if value.count(n) > 1})
        raise ValueError(f"names must be unique, got duplicates {duplicates}")


@attrs.frozen(eq=False)
class BNStatistics:
    """Batch and running statistics of a model's BatchNorm layers, one entry per layer.

    The container that :func:`risloss.hooks.capture_bn_statistics` fills during a forward pass
    and :class:`risloss.losses.BNStatisticsLoss` consumes. Entry ``l`` of every field belongs
    to the layer ``names[l]``, in the order the layers ran:

    - ``batch_means[l]``, ``batch_vars[l]``: per-channel mean and *biased* variance of the
      layer's input in this batch (see :func:`batch_moments`), shape ``(C_l,)``; these carry
      the gradient;
    - ``running_means[l]``, ``running_vars[l]``: the layer's running statistics, shape
      ``(C_l,)``, the targets.

    Sequences are stored as tuples. The object is immutable and compares by identity (tensors
    have no single truth value). Per-layer shapes are checked by :func:`bn_statistics_loss`.

    Attributes:
        names: qualified names of the BatchNorm modules (unique).
        batch_means: per-layer batch means.
        batch_vars: per-layer biased batch variances.
        running_means: per-layer running means.
        running_vars: per-layer running variances.

    Raises:
        ValueError: fields of different lengths, or duplicate names.
        TypeError: a name that is not a ``str`` or an entry that is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import BNStatistics, batch_moments
        >>> bn = torch.nn.BatchNorm2d(3)
        >>> mean, var = batch_moments(torch.randn(8, 3, 4, 4))
        >>> stats = BNStatistics(
        ...     names=("bn",), batch_means=(mean,), batch_vars=(var,),
        ...     running_means=(bn.running_mean,), running_vars=(bn.running_var,),
        ... )
        >>> len(stats), stats.names
        (1, ('bn',))
    """

    names: tuple[str, ...] = attrs.field(converter=_names, validator=_all_names)
    batch_means: tuple[torch.Tensor, ...] = attrs.field(converter=_tensors, validator=_all_tensors)
    batch_vars: tuple[torch.Tensor, ...] = attrs.field(converter=_tensors, validator=_all_tensors)
    running_means: tuple[torch.Tensor, ...] = attrs.field(
        converter=_tensors, validator=_all_tensors
    )
    running_vars: tuple[torch.Tensor, ...] = attrs.field(converter=_tensors, validator=_all_tensors)

    def __attrs_post_init__(self) -> None:
        lengths = {
            "names": len(self.names),
            "batch_means": len(self.batch_means),
            "batch_vars": len(self.batch_vars),
            "running_means": len(self.running_means),
            "running_vars": len(self.running_vars),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(f"BNStatistics fields must have the same length, got {lengths}")

    def __len__(self) -> int:
        """Number of BatchNorm layers."""
        return len(self.names)


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel mean and biased variance of ``x``, as BatchNorm computes them in training.

    For ``x`` of shape ``(N, C, *)`` the statistics run over every dimension but the channel
    dimension 1: :math:`\mu_c = \frac1M \sum x_{\cdot c \cdot}` and
    :math:`\sigma^2_c = \frac1M \sum (x_{\cdot c \cdot} - \mu_c)^2` with ``M = N * prod(*)``
    (division by ``M``, not ``M - 1``, as in BatchNorm's normalization).

    No finiteness check is made here: a non-finite moment is caught by
    :func:`bn_statistics_loss`.

    Args:
        x: a floating tensor ``(N, C, *)`` with at least one element per channel.

    Returns:
        ``(mean, var)``, each of shape ``(C,)``.

    Raises:
        ValueError: ``x`` has fewer than 2 dimensions, no element per channel, or is not
            floating.
        TypeError: ``x`` is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import batch_moments
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
        >>> batch_moments(x)
        (tensor([2., 4.]), tensor([1., 4.]))
    """
    check_floating(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, ...), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must have at least one element per channel, got {tuple(x.shape)}")
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean, var


def bn_statistics_loss(
    batch_means: Sequence[torch.Tensor],
    batch_vars: Sequence[torch.Tensor],
    running_means: Sequence[torch.Tensor],
    running_vars: Sequence[torch.Tensor],
    *,
    reduction: Reduction = "mean",
    channel_reduction: ChannelReduction = "sum",
) -> torch.Tensor:
    r"""Distance between batch statistics and BatchNorm running statistics, per layer.

    For every layer ``l``:

    .. math::

        L_l = \|\mu_l - \hat\mu_l\|^2 + \|\sigma^2_l - \hat\sigma^2_l\|^2

    with :math:`\mu_l, \sigma^2_l` the batch mean and biased variance at the layer's input and
    :math:`\hat\mu_l, \hat\sigma^2_l` its running statistics. ``channel_reduction="sum"`` is
    the squared norm above (the method's definition); ``"mean"`` divides each term by the
    number of channels (the MSE form of GDFQ's code). ``reduction="mean"`` averages over
    layers (``L_BNS``), ``"sum"`` adds them, ``"none"`` returns them.

    Gradients flow to every argument that requires them; running statistics are normally
    buffers and do not.

    Args:
        batch_means: per-layer batch means, each ``(C_l,)`` (any shape, equal to the
            layer's other three tensors).
        batch_vars: per-layer biased batch variances.
        running_means: per-layer running means.
        running_vars: per-layer running variances.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over layers.
        channel_reduction: ``"sum"`` or ``"mean"`` over channels.

    Returns:
        A scalar, or with ``reduction="none"`` a tensor of shape ``(L,)``.

    Raises:
        ValueError: an unknown ``reduction`` or ``channel_reduction``, sequences of different
            lengths or empty, a layer whose four tensors differ in shape, or a non-floating
            dtype.
        NonFiniteInputError: a statistic holds ``NaN`` or ``Inf``.
        TypeError: an entry is not a tensor.

    Example:
        >>> import torch
        >>> from risloss.functional import bn_statistics_loss
        >>> mu, var = [torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 1.0])]
        >>> rm, rv = [torch.zeros(2)], [torch.ones(2)]
        >>> bn_statistics_loss(mu, var, rm, rv)
        tensor(5.)
        >>> bn_statistics_loss(mu, var, rm, rv, channel_reduction="mean")
        tensor(2.5000)
    """
    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(channel_reduction, "channel_reduction", CHANNEL_REDUCTIONS)
    groups = {
        "batch_means": batch_means,
        "batch_vars": batch_vars,
        "running_means": running_means,
        "running_vars": running_vars,
    }
    lengths = {name: len(seq) for name, seq in groups.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            "batch_means, batch_vars, running_means and running_vars must have the same "
            f"length, got {lengths}"
        )
    if lengths["batch_means"] == 0:
        raise ValueError("bn_statistics_loss needs at least one BatchNorm layer, got none")

    per_layer = []
    for layer, (mu, var, rm, rv) in enumerate(
        zip(batch_means, batch_vars, running_means, running_vars, strict=True)
    ):
        tensors = {"batch_means": mu, "batch_vars": var, "running_means": rm, "running_vars": rv}
        for name, value in tensors.items():
            check_floating(value, f"{name}[{layer}]")
        shapes = {name: tuple(value.shape) for name, value in tensors.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"layer {layer}: statistics must have the same shape, got {shapes}")
        for name, value in tensors.items():
            check_finite(value, f"{name}[{layer}]")
        if channel_reduction == "sum":
            per_layer.append((mu - rm).square().sum() + (var - rv).square().sum())
        else:
            per_layer.append((mu - rm).square().mean() + (var - rv).square().mean())
    return reduce(torch.stack(per_layer), reduction)
