"""Data-free knowledge distillation with RIS images, in a hand-written training loop.

A conditional generator learns images with the RIS objective (SynthesisObjective): the teacher
classifies them as their label (cross-entropy), their BatchNorm statistics match the teacher's
(BNS), the teacher is robust to input and weight perturbations on them (RobustnessLoss) and its
predictions are diverse (label-correlation penalty). Every batch then trains a smaller student by
knowledge distillation. One clean teacher pass per batch feeds all the generator's terms and the
student's targets.

    python examples/distill_custom_loop.py --iters 2000 --batch-size 64
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import Subset

from risloss import RISConfig, SynthesisObjective, evaluate
from risloss.data import load_dataset
from risloss.functional import kd_loss
from risloss.models import DEFAULT_TEACHER, Generator, load_pretrained, pretrained_info, resnet8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="a shipped teacher")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # initial weights of the generator and the student
    rng = torch.Generator().manual_seed(args.seed)  # every random draw of the loop
    info = pretrained_info(args.teacher)
    classes, (channels, size, _) = info["num_classes"], info["input_shape"]
    teacher = load_pretrained(args.teacher).requires_grad_(False)  # eval mode, frozen
    student = resnet8(num_classes=classes, in_channels=channels, image_size=size).train()
    generator = Generator(num_classes=classes, image_size=size, channels=channels).train()

    # CE + 0.1 BNS + 1.0 robustness (default perturbations) + 0.1 diversity, one clean pass.
    objective = SynthesisObjective.from_config(teacher, RISConfig(), generator=rng)
    g_opt = torch.optim.Adam(generator.param_groups(1e-3), betas=(0.5, 0.999))
    s_opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    s_sched = torch.optim.lr_scheduler.CosineAnnealingLR(s_opt, T_max=args.iters)

    for it in range(1, args.iters + 1):
        labels = torch.randint(0, classes, (args.batch_size,), generator=rng)
        z = torch.randn(args.batch_size, generator.latent_dim, generator=rng)
        images = generator(z, labels)
        parts = objective(images, labels)
        g_opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        g_opt.step()

        # Student step on the same images, towards the teacher's predictions (both detached).
        s_loss = kd_loss(student(images.detach()), parts.logits.detach(), t=1.0)
        s_opt.zero_grad(set_to_none=True)
        s_loss.backward()
        s_opt.step()
        s_sched.step()
        if it % 100 == 0 or it == args.iters:
            figures = " ".join(f"{k} {v:.3f}" for k, v in parts.scalars(prefix="").items())
            print(f"iter {it}: {figures} kd {s_loss:.3f}")

    test = load_dataset(info["dataset"], "test")
    if args.eval_limit is not None:
        test = Subset(test, range(min(args.eval_limit, len(test))))  # type: ignore[arg-type]
    params = [sum(p.numel() for p in m.parameters()) for m in (teacher, student)]
    print(f"teacher top-1: {evaluate(teacher, test):.2f}%  ({params[0]} parameters)")
    print(f"student top-1: {evaluate(student, test):.2f}%  ({params[1]} parameters)")


if __name__ == "__main__":
    main()
