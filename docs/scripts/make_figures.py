"""Draw the figures of the documentation site.

- ``docs/assets/synthetic_vs_real.png``: images synthesized by a RIS generator next to real
  Fashion-MNIST test images, one row per class;
- ``docs/assets/ris_branches.png``: the clean and perturbed branches of the robustness loss.

The generator comes from a finished run (``--run DIR``, a folder written by
``risloss quantize`` that holds ``generator.pt`` and ``metrics.json``); without ``--run`` a short
run is trained first (a couple of minutes on a CPU). The figure on the home page was made with::

    risloss quantize --model resnet8_fashion_mnist --iters 150 --warmup 150 --batch-size 32 \\
        --out /tmp/figrun
    python docs/scripts/make_figures.py --run /tmp/figrun

Needs matplotlib and the Fashion-MNIST files (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from risloss.data import TensorImageDataset, load_dataset
from risloss.models import Generator

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _brief_run(out: Path) -> None:
    from risloss.training import TrainConfig, train

    config = TrainConfig(
        model="resnet8_fashion_mnist", iters=150, warmup=150, batch_size=32, seed=0
    )
    train(config, out, progress=False, log=None)


def _test_set(run: Path) -> TensorImageDataset:
    """The test split of the run's data set (one held as tensors, such as Fashion-MNIST)."""
    metrics = json.loads((run / "metrics.json").read_text())
    test = load_dataset(metrics["config"]["data"], "test")
    if not isinstance(test, TensorImageDataset):
        raise SystemExit(f"the figure needs a tensor data set such as fashion-mnist, got {test!r}")
    return test


def _load_generator(run: Path, test: TensorImageDataset) -> Generator:
    state = torch.load(run / "generator.pt", map_location="cpu", weights_only=True)
    num_classes = int(state["label_embedding.weight"].shape[0])
    channels = int(state["conv3.weight"].shape[0])
    size = int(test.images.shape[-1])
    gen = Generator(num_classes=num_classes, image_size=size, channels=channels)
    gen.load_state_dict(state)
    return gen.eval()


@torch.no_grad()
def synthetic_vs_real(run: Path, path: Path, *, per_class: int = 4, seed: int = 0) -> None:
    """Write the comparison grid: synthesized images left, real test images right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = _test_set(run)
    gen = _load_generator(run, test)
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(gen.num_classes).repeat_interleave(per_class)
    synthetic = test.denormalize(gen.sample(labels, generator=rng))
    real_rows = []
    for c in range(gen.num_classes):
        idx = (test.labels == c).nonzero().flatten()[:per_class]
        real_rows.append(test.denormalize(test.images[idx]))
    real = torch.cat(real_rows)

    rows, cols = gen.num_classes, 2 * per_class + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.62 + 1.2, rows * 0.62 + 0.5))
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == per_class:
                continue
            img = (
                synthetic[r * per_class + c]
                if c < per_class
                else real[r * per_class + c - per_class - 1]
            )
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(test.classes[r], rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.17, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.05)
    for first, title in ((0, "synthesized (RIS)"), (per_class + 1, "real test images")):
        left = axes[0, first].get_position().x0
        right = axes[0, first + per_class - 1].get_position().x1
        fig.text((left + right) / 2, 0.965, title, ha="center", va="bottom", fontsize=8)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def branches_diagram(path: Path) -> None:
    """Write the diagram of the clean and perturbed passes of the robustness loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(8.0, 3.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4)
    ax.axis("off")

    def box(x: float, y: float, text: str, color: str, w: float = 1.7) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - 0.32), w, 0.64, boxstyle="round,pad=0.05", fc=color, ec="0.3"
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)

    def arrow(x0: float, y0: float, x1: float, y1: float, label: str = "") -> None:
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 1.0})
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", fontsize=7.5)

    box(0.9, 2.0, "$G(z, y)$", "#dfe8f7", w=1.2)
    box(3.0, 3.1, "teacher $F$", "#e8f4e1")
    box(3.0, 0.9, "$F$ on $T(x)$ and/or\nweights $W + \\delta$", "#fbe3d6", w=2.1)
    box(5.9, 3.1, "$f(x),\\ p(x)$", "#f2f2f2")
    box(5.9, 0.9, "$\\tilde f(x),\\ \\tilde p(x)$", "#f2f2f2")
    box(8.5, 2.0, "$\\max(0,\\ \\lambda_f D_f + \\lambda_p D_p - \\epsilon_t)$", "#fff3c4", w=2.6)
    arrow(1.5, 2.15, 2.15, 3.0, "$x$")
    arrow(1.5, 1.85, 1.95, 1.0, "$x$")
    arrow(3.85, 3.1, 5.05, 3.1, "clean pass")
    arrow(4.1, 0.9, 5.05, 0.9, "perturbed pass")
    arrow(6.75, 3.0, 7.3, 2.35)
    arrow(6.75, 1.0, 7.3, 1.65)
    ax.text(
        5.9,
        2.0,
        "$D_f$: feature distance (cosine)\n$D_p$: prediction distance (L1)",
        ha="center",
        va="center",
        fontsize=7.5,
        color="0.3",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (holds generator.pt)")
    parser.add_argument("--out", type=Path, default=ASSETS, help="where the PNG files go")
    parser.add_argument("--per-class", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    branches_diagram(args.out / "ris_branches.png")
    if args.run is not None:
        synthetic_vs_real(args.run, args.out / "synthetic_vs_real.png", per_class=args.per_class)
        return
    with tempfile.TemporaryDirectory() as tmp:
        _brief_run(Path(tmp))
        synthetic_vs_real(Path(tmp), args.out / "synthetic_vs_real.png", per_class=args.per_class)


if __name__ == "__main__":
    main()
