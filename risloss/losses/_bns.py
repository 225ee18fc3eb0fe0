"""Module twin of :func:`risloss.functional.bn_statistics_loss`."""

from __future__ import annotations

import torch

from risloss._validators import one_of
from risloss.functional._bns import (
    CHANNEL_REDUCTIONS,
    BNStatistics,
    ChannelReduction,
    bn_statistics_loss,
)
from risloss.functional._reduction import REDUCTIONS, Reduction
from risloss.losses._options import OptionsModule, option

__all__ = ["BNStatisticsLoss"]


class BNStatisticsLoss(OptionsModule):
    """GDFQ's ``L_BNS``: align batch statistics with BatchNorm running statistics.

    Holds a validated configuration and calls
    :func:`~risloss.functional.bn_statistics_loss` on the fields of a
    :class:`~risloss.functional.BNStatistics` (as produced by
    :func:`risloss.hooks.capture_bn_statistics`). The configuration is read-only.

    Args:
        reduction: over layers: ``"mean"`` (default, ``L_BNS``), ``"sum"`` or ``"none"``.
        channel_reduction: over channels: ``"sum"`` (default, the squared norm) or ``"mean"``.

    Shape:
        - Input: a :class:`~risloss.functional.BNStatistics` of ``L`` layers.
        - Output: a scalar, or ``(L,)`` with ``reduction="none"``.

    Raises:
        ValueError: an unknown ``reduction`` or ``channel_reduction``.

    Example:
        >>> import torch
        >>> from risloss.functional import BNStatistics
        >>> from risloss.losses import BNStatisticsLoss
        >>> stats = BNStatistics(
        ...     names=("bn1",), batch_means=(torch.ones(2),), batch_vars=(torch.ones(2),),
        ...     running_means=(torch.zeros(2),), running_vars=(torch.ones(2),),
        ... )
        >>> BNStatisticsLoss()(stats)
        tensor(2.)
    """

    reduction: Reduction = option(one_of(REDUCTIONS))
    """The reduction over layers."""
    channel_reduction: ChannelReduction = option(one_of(CHANNEL_REDUCTIONS))
    """The reduction over channels."""

    def __init__(
        self, reduction: Reduction = "mean", channel_reduction: ChannelReduction = "sum"
    ) -> None:
        super().__init__()
        self._configure(reduction=reduction, channel_reduction=channel_reduction)

    def forward(self, stats: BNStatistics) -> torch.Tensor:
        """``L_BNS`` of the captured statistics ``stats``.

        Args:
            stats: the statistics of one forward pass, from
                :func:`risloss.hooks.capture_bn_statistics`.

        Returns:
            A scalar, or ``(L,)`` with ``reduction="none"``.

        Raises:
            TypeError: ``stats`` is not a :class:`~risloss.functional.BNStatistics`.
        """
        if not isinstance(stats, BNStatistics):
            raise TypeError(f"stats must be a BNStatistics, got {type(stats).__name__}")
        return bn_statistics_loss(
            stats.batch_means,
            stats.batch_vars,
            stats.running_means,
            stats.running_vars,
            reduction=self.reduction,
            channel_reduction=self.channel_reduction,
        )
