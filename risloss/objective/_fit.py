"""Where a new generator's images should start: the input statistics the teacher expects."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from risloss.hooks import capture_bn_statistics

__all__ = ["fit_input_statistics", "is_standardized", "natural_noise"]


class _Reached(Exception):
    """Stops a forward pass once the first BatchNorm layer has seen its input."""


@torch.no_grad()
def _first_batchnorm(teacher: nn.Module, images: torch.Tensor) -> str:
    with capture_bn_statistics(teacher) as bn:
        teacher(images)
    return bn.statistics().names[0]


STANDARDIZED_SCALE = (0.5, 2.0)
"""Fitted scales in this range (and shifts within :data:`STANDARDIZED_SHIFT`) count as
standardized inputs: see :func:`is_standardized`."""
STANDARDIZED_SHIFT = 0.5


def is_standardized(scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """Whether fitted input statistics describe standardized images (zero mean, unit variance
    per channel) closely enough to leave a generator's output as it is.

    Every channel's scale in ``[0.5, 2]`` and shift within ``0.5`` of zero. A teacher that
    takes standardized images fits well inside (the shipped ones: scale 0.9-1.1, shift under
    0.25); one that takes ``[0, 1]`` pixels and normalizes them itself fits a scale near its
    data's standard deviation (about 0.25-0.35) and a shift near its mean.

    Example:
        >>> import torch
        >>> from risloss.objective import is_standardized
        >>> is_standardized(torch.tensor([0.9, 1.1]), torch.tensor([-0.2, 0.1]))
        True
        >>> is_standardized(torch.tensor([0.25]), torch.tensor([0.48]))  # [0, 1] pixels
        False
    """
    low, high = STANDARDIZED_SCALE
    inside = (scale >= low) & (scale <= high) & (shift.abs() <= STANDARDIZED_SHIFT)
    return bool(inside.all())


def natural_noise(
    batch: int,
    shape: tuple[int, int, int],
    *,
    generator: torch.Generator | None = None,
    channel_correlation: float = 0.9,
) -> torch.Tensor:
    """Random images with the second-order statistics of natural images, standardized.

    A power spectrum falling as ``1/f^2`` (neighbouring pixels strongly correlated) and
    channels correlated with each other (``channel_correlation``, about 0.9 between the RGB
    channels of photographs), then zero mean and unit variance per channel. A data-free probe
    for :func:`fit_input_statistics`: a first convolution responds to these as to real images
    far more closely than to white noise.

    Args:
        batch: number of images.
        shape: ``(C, H, W)``.
        generator: the random source (``None``: the global one).
        channel_correlation: correlation between any two channels, in ``[0, 1]``.

    Returns:
        ``(batch, C, H, W)`` float images.

    Raises:
        ValueError: ``batch`` below 2 or ``channel_correlation`` outside ``[0, 1]``.

    Example:
        >>> import torch
        >>> from risloss.objective import natural_noise
        >>> x = natural_noise(64, (3, 16, 16), generator=torch.Generator().manual_seed(0))
        >>> x.shape, abs(float(x.mean())) < 1e-6, round(float(x.std()), 1)
        (torch.Size([64, 3, 16, 16]), True, 1.0)
    """
    if batch < 2:
        raise ValueError(f"batch must be >= 2, got {batch}")
    if not 0.0 <= channel_correlation <= 1.0:
        raise ValueError(f"channel_correlation must be in [0, 1], got {channel_correlation}")
    c, h, w = shape
    shared = torch.randn(batch, 1, h, w, generator=generator)
    own = torch.randn(batch, c, h, w, generator=generator)
    white = math.sqrt(channel_correlation) * shared + math.sqrt(1 - channel_correlation) * own
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.fftfreq(w).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / max(h, w))
    x = torch.fft.ifft2(torch.fft.fft2(white) / radius).real
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def fit_input_statistics(
    teacher: nn.Module,
    images: torch.Tensor,
    *,
    steps: int = 25,
    per_channel_scale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` that make ``scale * images + shift`` look like the
    teacher's inputs to its first BatchNorm layer.

    Data-free: only the running statistics of the first BatchNorm layer the images reach are
    used, running the teacher only up to that layer. Two fits by L-BFGS: the shift matches the
    batch mean at that layer's input to its running mean (the mean does not depend on the
    scale of zero-mean images), then the scale matches the batch variance to its running
    variance. The scale is one number for every channel unless ``per_channel_scale``: how a
    first convolution's variance splits between correlated input channels is poorly
    determined, and the channels of natural images have nearly equal standard deviations (the
    shifts are per channel: the mean is well determined). Whatever affine preprocessing the
    teacher applies first (a normalization of ``[0, 1]`` images, a convolution) is absorbed,
    and the fit follows it exactly: the teacher behind a normalization ``(x - m) / s`` fits
    ``s * scale`` and ``m + s * shift``, where ``(scale, shift)`` is the bare teacher's fit
    (for a shared scale, where ``s`` is one number).

    Args:
        teacher: the frozen classifier (its state is not changed).
        images: a standardized probe batch ``(B, C, H, W)``; :func:`natural_noise` gives the
            closest estimate of the scale (white noise overestimates it for a first
            convolution that averages neighbouring pixels).
        steps: L-BFGS iterations of each fit.
        per_channel_scale: fit one scale per channel instead of one for all.

    Returns:
        ``scale`` (positive) and ``shift``, each ``(C,)``, detached.

    Raises:
        ValueError: a teacher without BatchNorm layers, or ``steps < 1``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from risloss.objective import fit_input_statistics
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=None))
        >>> with torch.no_grad():  # a teacher trained on images of mean 3 and std 2
        ...     _ = net.train()(3 + 2 * torch.randn(256, 1, 8, 8))
        >>> scale, shift = fit_input_statistics(net.eval(), torch.randn(64, 1, 8, 8))
        >>> round(float(shift)), round(float(scale))  # estimates from 64 random images
        (3, 2)
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    images = images.detach()
    first = _first_batchnorm(teacher, images)
    bn = dict(teacher.named_modules())[first]
    running_mean, running_var = bn.running_mean.detach(), bn.running_var.detach()
    c = images.shape[1]
    shape = (1, c, 1, 1)
    seen: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])
        raise _Reached

    def first_input(x: torch.Tensor) -> torch.Tensor:
        seen.clear()
        handle = bn.register_forward_pre_hook(stop)
        try:
            teacher(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        return seen[0]

    def fit(param: torch.Tensor, loss_of: Any) -> None:
        optimizer = torch.optim.LBFGS(
            [param], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_of()
            loss.backward()
            return loss

        optimizer.step(closure)

    def dims(h: torch.Tensor) -> list[int]:
        return [d for d in range(h.dim()) if d != 1]

    shift = torch.zeros(c, device=images.device, requires_grad=True)
    log_scale = torch.zeros(c if per_channel_scale else 1, device=images.device)
    log_scale.requires_grad_(True)

    def mean_loss() -> torch.Tensor:
        h = first_input(images + shift.view(shape))
        return ((h.mean(dims(h)) - running_mean) ** 2).sum()

    def var_loss() -> torch.Tensor:
        scale = log_scale.exp().expand(c)
        h = first_input(images * scale.view(shape) + shift.detach().view(shape))
        return ((h.var(dims(h), unbiased=False) - running_var) ** 2).sum()

    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            fit(shift, mean_loss)
            fit(log_scale, var_loss)
    finally:
        teacher.train(was_training)
    return log_scale.detach().exp().expand(c).clone(), shift.detach()
