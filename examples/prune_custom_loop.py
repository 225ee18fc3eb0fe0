"""Data-free pruning with RIS images, in a hand-written training loop.

Prune a copy of the teacher (global magnitude pruning through torch.nn.utils.prune, or channel
pruning by L1 norm with --structured), then recover its accuracy by distillation on images from
a generator trained with the RIS objective (SynthesisObjective: cross-entropy + BNS +
RobustnessLoss + label-correlation penalty, all fed by one clean teacher pass per batch). The
pruning masks stay in place while the pruned model trains; finalize_pruning makes them
permanent at the end.

    python examples/prune_custom_loop.py --sparsity 0.7 --iters 1000
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import Subset

from risloss import RISConfig, SynthesisObjective, evaluate
from risloss.data import load_dataset
from risloss.functional import kd_loss
from risloss.models import DEFAULT_TEACHER, Generator, load_pretrained, pretrained_info
from risloss.pruning import finalize_pruning, model_stats, prune_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="a shipped teacher")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction pruned, in [0, 1)")
    parser.add_argument("--structured", action="store_true", help="remove whole channels")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # initial weights of the generator
    rng = torch.Generator().manual_seed(args.seed)  # every random draw of the loop
    info = pretrained_info(args.teacher)
    classes, (channels, size, _) = info["num_classes"], info["input_shape"]
    teacher = load_pretrained(args.teacher).requires_grad_(False)  # eval mode, frozen
    # A pruned copy; it stays in eval mode (BatchNorm statistics fixed, affine parameters train).
    pruned = prune_model(teacher, sparsity=args.sparsity, structured=args.structured)
    pruned.requires_grad_(True)
    generator = Generator(num_classes=classes, image_size=size, channels=channels).train()

    objective = SynthesisObjective.from_config(teacher, RISConfig(), generator=rng)
    g_opt = torch.optim.Adam(generator.param_groups(1e-3), betas=(0.5, 0.999))
    s_opt = torch.optim.SGD(pruned.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    for it in range(1, args.iters + 1):
        labels = torch.randint(0, classes, (args.batch_size,), generator=rng)
        z = torch.randn(args.batch_size, generator.latent_dim, generator=rng)
        images = generator(z, labels)
        parts = objective(images, labels)  # one clean teacher pass feeds every term
        g_opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        g_opt.step()

        # Recovery step: distill the teacher into the pruned model (masked weights stay zero).
        s_loss = kd_loss(pruned(images.detach()), parts.logits.detach(), t=1.0)
        s_opt.zero_grad(set_to_none=True)
        s_loss.backward()
        s_opt.step()
        if it % 100 == 0 or it == args.iters:
            print(
                f"iter {it}: generator {parts.loss:.3f} agree {parts.agreement:.2f} kd {s_loss:.3f}"
            )

    finalize_pruning(pruned)  # weight_orig * weight_mask -> weight; no hooks left
    test = load_dataset(info["dataset"], "test")
    if args.eval_limit is not None:
        test = Subset(test, range(min(args.eval_limit, len(test))))  # type: ignore[arg-type]
    shape = (channels, size, size)
    for name, model in (("teacher", teacher), ("pruned", pruned)):
        s = model_stats(model, shape)
        print(
            f"{name} top-1: {evaluate(model, test):.2f}%  params {s['params']} "
            f"(non-zero {s['nonzero_params']}), MACs {s['macs']:.0f} "
            f"(on non-zero weights {s['effective_macs']:.0f}), sparsity {s['sparsity']:.3f}"
        )


if __name__ == "__main__":
    main()
