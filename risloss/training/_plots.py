"""Pictures of a run: a grid of synthesized images and the loss curves."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from risloss.models import Generator

__all__ = ["PLOT_HINT", "have_matplotlib", "save_loss_plot", "save_samples"]

PLOT_HINT = "matplotlib is not installed (pip install 'risloss[plot]' adds it)"
"""The line said when the loss plot is skipped."""


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the loss plot needs it; nothing else does)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@torch.no_grad()
def save_samples(
    generator: Generator, num_classes: int, path: Path, *, per_class: int = 8, seed: int = 0
) -> None:
    """Save a PNG grid of synthesized images, one row per class (min-max scaled per image)."""
    from torchvision.utils import save_image

    was_training = generator.training
    generator.eval()
    try:
        rng = torch.Generator().manual_seed(seed)
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        device = generator.fc.weight.device
        z = torch.randn(len(labels), generator.latent_dim, generator=rng).to(device)
        x = generator(z, labels.to(device)).float().cpu()
    finally:
        generator.train(was_training)
    flat = x.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    save_image(x, str(path), nrow=per_class, padding=1)


def save_loss_plot(history: list[dict[str, float]], path: Path) -> bool:
    """Plot every loss component of ``history`` against the iteration.

    Returns:
        Whether the plot was written: without matplotlib (an optional dependency, the ``plot``
        extra) nothing is written and a :class:`UserWarning` says how to get it.
    """
    if not have_matplotlib():
        warnings.warn(f"{path.name} skipped: {PLOT_HINT}", UserWarning, stacklevel=2)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h if k not in ("iter", "lr")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(h["iter"], h[k]) for h in history if k in h]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k, linewidth=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("symlog", linthresh=1e-3)
    if keys:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
