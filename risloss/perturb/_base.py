"""The input-perturbation protocol: draw random parameters, then apply them."""

from __future__ import annotations

import abc
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["InputPerturbation"]

P = TypeVar("P")


class InputPerturbation(nn.Module, Generic[P], abc.ABC):
    """A random, differentiable transformation of a batch of images.

    Sampling and applying are separate steps, so that a draw can be inspected and replayed:
    ``sample`` draws the random parameters of every sample of a batch (from an explicit
    ``torch.Generator``), ``transform`` applies given parameters to the images, and ``forward``
    chains the two: ``forward(x, generator) == transform(x, sample(x, generator))``. (The
    applying step is not called ``apply``: ``nn.Module.apply(fn)`` must keep its meaning, since
    a parent module's ``apply`` recurses into its children.)

    Contract shared by every operator:

    - ``sample`` reads only the shape, dtype and device of ``x``, never its values. Random numbers
      are drawn on the generator's device (on ``x.device`` when no generator is given, from the
      global generator of that device) and the parameters are then moved to ``x.device``.
    - ``transform`` is differentiable with respect to ``x`` and never modifies ``x`` in place; the
      output has the shape, dtype and device of ``x``.
    - The parameters are a frozen record of per-sample tensors (leading dimension ``B``).

    Shape:
        - Input: ``(B, C, H, W)``, floating point.
        - Output: ``(B, C, H, W)``.

    Example:
        >>> import torch
        >>> from risloss.perturb import GaussianNoise
        >>> op = GaussianNoise(std=0.1)
        >>> x = torch.zeros(2, 3, 8, 8)
        >>> params = op.sample(x, torch.Generator().manual_seed(0))
        >>> torch.equal(op.transform(x, params), op.transform(x, params))
        True
    """

    @abc.abstractmethod
    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> P:
        """Draw the random parameters of a perturbation of every sample of ``x``.

        Args:
            x: images ``(B, C, H, W)``; only their shape, dtype and device are read.
            generator: the source of randomness; ``None`` uses the global generator of
                ``x.device``.

        Returns:
            The parameters, per sample, on ``x.device``.
        """

    @abc.abstractmethod
    def transform(self, x: Tensor, params: P) -> Tensor:
        """Perturb ``x`` with the given parameters (differentiable with respect to ``x``).

        Args:
            x: images ``(B, C, H, W)``.
            params: parameters returned by :meth:`sample` for a batch of the same shape.

        Returns:
            The perturbed images, ``(B, C, H, W)``.
        """

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw parameters and apply them: ``transform(x, sample(x, generator))``.

        Args:
            x: images ``(B, C, H, W)``.
            generator: the source of randomness; ``None`` uses the global generator.

        Returns:
            The perturbed images, ``(B, C, H, W)``.
        """
        return self.transform(x, self.sample(x, generator))


def check_images(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating-point ``(B, C, H, W)`` tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor of shape (B, C, H, W), got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}"
        )


def check_batch(x: Tensor, name: str, value: Tensor) -> None:
    """Raise ``ValueError`` unless the parameter ``value`` has one entry per sample of ``x``."""
    check_images(x)
    if value.dim() == 0 or value.shape[0] != x.shape[0]:
        raise ValueError(
            f"params.{name} must have one entry per sample ({x.shape[0]}), got shape "
            f"{tuple(value.shape)}"
        )


def sample_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device, else ``x.device``."""
    return generator.device if generator is not None else x.device


def uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    x: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    """``U(low, high)`` samples of ``shape``, drawn on the generator's device, moved to ``x``."""
    u = torch.rand(shape, generator=generator, device=sample_device(x, generator), dtype=x.dtype)
    return (low + (high - low) * u).to(x.device)


def bernoulli(
    shape: tuple[int, ...], p: float, x: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Boolean ``Bernoulli(p)`` samples of ``shape``, moved to ``x.device``."""
    u = torch.rand(shape, generator=generator, device=sample_device(x, generator))
    return (u < p).to(x.device)


def normal(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal samples of ``shape`` in ``x.dtype``, moved to ``x.device``."""
    xi = torch.randn(shape, generator=generator, device=sample_device(x, generator), dtype=x.dtype)
    return xi.to(x.device)
