"""The labels a generator is asked for: hard classes or soft mixtures of a few classes."""

from __future__ import annotations

from typing import Literal

import attrs
import torch

from risloss._validators import int_at_least

__all__ = ["LabelKind", "LabelSampler"]

LabelKind = Literal["hard", "soft"]
"""What :meth:`LabelSampler.sample` returns: class indices or soft label vectors."""


@attrs.frozen
class LabelSampler:
    """Draws the labels of a synthesized batch: hard classes, or soft mixtures of ``mixed``
    classes (RIS's default diversity in label space).

    A hard label is a class drawn uniformly. A soft label draws its primary class the same
    way and gives it a weight drawn in ``[0.5, 1)``; ``mixed - 1`` other classes, chosen at
    random, share the rest with random proportions, so rows of different primary classes stay
    weakly correlated. Every draw comes from the ``torch.Generator`` passed to :meth:`sample`,
    in a fixed order: the trainer's generator source samples its labels with this class, so a
    loop of your own that passes a generator seeded alike draws the same labels.

    Build one with :meth:`hard` or :meth:`soft`, or ask a configuration for the labels it
    implies (:meth:`~risloss.objective.RISConfig.label_sampler`).

    Attributes:
        num_classes: the classes of the teacher (at least 1).
        mixed: classes mixed in each label: 1 for hard labels, 2..``num_classes`` for soft.

    Raises:
        ValueError: ``num_classes < 1``, or ``mixed`` outside ``1..num_classes``.

    Example:
        >>> import torch
        >>> from risloss.objective import LabelSampler
        >>> LabelSampler.hard(10).sample(4, generator=torch.Generator().manual_seed(0))
        tensor([4, 9, 3, 0])
        >>> soft = LabelSampler.soft(10, 2).sample(3, generator=torch.Generator().manual_seed(0))
        >>> soft.shape, (soft > 0).sum(1).tolist(), soft.sum(1).allclose(torch.ones(3))
        (torch.Size([3, 10]), [2, 2, 2], True)
    """

    num_classes: int = attrs.field(validator=int_at_least(1))
    mixed: int = attrs.field(default=1, validator=int_at_least(1))

    def __attrs_post_init__(self) -> None:
        if self.mixed > self.num_classes:
            raise ValueError(
                f"mixed must be at most num_classes ({self.num_classes}): a label cannot mix "
                f"more classes than the teacher has, got {self.mixed}"
            )

    @classmethod
    def hard(cls, num_classes: int) -> LabelSampler:
        """Hard labels: ``(B,)`` class indices, uniform over ``num_classes`` classes.

        Args:
            num_classes: the teacher's classes.

        Returns:
            The sampler.
        """
        return cls(num_classes, 1)

    @classmethod
    def soft(cls, num_classes: int, k: int = 2) -> LabelSampler:
        """Soft labels: ``(B, num_classes)`` rows that mix ``k`` classes and sum to 1.

        Args:
            num_classes: the teacher's classes.
            k: classes mixed in each label, ``2..num_classes``.

        Returns:
            The sampler.

        Raises:
            ValueError: ``k`` outside ``2..num_classes`` (``k=1`` is :meth:`hard`).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(
                f"k must be an integer >= 2 for soft labels (1 class is LabelSampler.hard), "
                f"got {k!r}"
            )
        return cls(num_classes, k)

    @property
    def kind(self) -> LabelKind:
        """``"hard"`` or ``"soft"``."""
        return "hard" if self.mixed < 2 else "soft"

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw the labels of one batch.

        Draws, in this order: ``batch_size`` primary classes (``torch.randint``); for soft
        labels then ``(batch_size, num_classes)`` uniforms that choose the other classes, the
        ``batch_size`` primary weights and the ``(batch_size, mixed - 1)`` shares of the rest.

        Args:
            batch_size: labels to draw, at least 1.
            generator: the source of every draw (``None``: torch's global generator). The
                labels are drawn on the CPU, so a CPU generator gives the same labels
                whatever ``device`` is.
            device: where to put the labels (``None``: the CPU).

        Returns:
            ``(batch_size,)`` int64 class indices, or ``(batch_size, num_classes)`` float
            rows that sum to 1 whose largest entry is the primary class.

        Raises:
            ValueError: ``batch_size < 1``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        b, c = batch_size, self.num_classes
        hard = torch.randint(0, c, (b,), generator=generator)
        if self.mixed < 2:
            return hard if device is None else hard.to(device)
        # The drawn class keeps the largest weight; k - 1 other classes share the rest.
        k = min(self.mixed, c)
        others = torch.rand((b, c), generator=generator)
        others[torch.arange(b), hard] = -1.0
        extra = others.topk(k - 1, dim=1).indices
        primary = 0.5 + 0.5 * torch.rand((b, 1), generator=generator)
        rest = torch.rand((b, k - 1), generator=generator)
        rest = rest / rest.sum(1, keepdim=True) * (1 - primary)
        soft = torch.zeros(b, c)
        soft[torch.arange(b), hard] = primary.squeeze(1)
        soft.scatter_(1, extra, rest)
        return soft if device is None else soft.to(device)
