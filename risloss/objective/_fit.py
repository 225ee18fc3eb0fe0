"""Where a new generator's images should start: the input statistics the teacher expects."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from risloss.hooks import capture_bn_statistics

__all__ = ["fit_input_statistics"]


class _Reached(Exception):
    """Stops a forward pass once the first BatchNorm layer has seen its input."""


@torch.no_grad()
def _first_batchnorm(teacher: nn.Module, images: torch.Tensor) -> str:
    with capture_bn_statistics(teacher) as bn:
        teacher(images)
    return bn.statistics().names[0]


def fit_input_statistics(
    teacher: nn.Module, images: torch.Tensor, *, steps: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` that make ``scale * images + shift`` look like the
    teacher's inputs to its first BatchNorm layer.

    Data-free: only the running statistics of the first BatchNorm layer the images reach are
    used. The batch mean and variance at its input are matched to them by L-BFGS over the
    ``2 C`` numbers, running the teacher only up to that layer. Whatever affine
    preprocessing the teacher applies first (a normalization of ``[0, 1]`` images, a
    convolution) is absorbed, so a generator whose images start standardized can start in the
    teacher's own input range.

    Args:
        teacher: the frozen classifier (its state is not changed).
        images: a batch ``(B, C, H, W)``, e.g. a new generator's standardized output.
        steps: L-BFGS iterations.

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
    running = (bn.running_mean.detach(), bn.running_var.detach())
    c = images.shape[1]
    log_scale = torch.zeros(c, device=images.device, requires_grad=True)
    shift = torch.zeros(c, device=images.device, requires_grad=True)
    seen: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])
        raise _Reached

    shape = (1, c, 1, 1)
    optimizer = torch.optim.LBFGS(
        [log_scale, shift], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        seen.clear()
        x = images * log_scale.exp().view(shape) + shift.view(shape)
        handle = bn.register_forward_pre_hook(stop)
        try:
            teacher(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        h = seen[0]
        dims = [d for d in range(h.dim()) if d != 1]
        mean, var = h.mean(dims), h.var(dims, unbiased=False)
        loss = ((mean - running[0]) ** 2).sum() + ((var - running[1]) ** 2).sum()
        loss.backward()
        return loss

    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            optimizer.step(closure)
    finally:
        teacher.train(was_training)
    return log_scale.detach().exp(), shift.detach()
