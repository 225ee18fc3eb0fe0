"""Post-training W8A8 quantization of the shipped teacher with PyTorch's PT2E flow (torchao).

PyTorch calibrates the activation ranges of a quantized model on a few hundred representative
images. This script takes them from a calibration file (a ``.pt`` dict whose ``images`` entry
is a float tensor ``(N, C, H, W)`` in the model's normalized input space, such as the
``synthetic.pt`` that ``risloss synthesize`` writes), from Gaussian noise (``noise``) or from
real training images (``real``), then reports test top-1 of the int8 model. It needs the
``torchao`` package (``pip install torchao``), which holds PyTorch's PT2E quantization now.

    python examples/ptq_calibration.py --calibration noise
    python examples/ptq_calibration.py --calibration real --num-images 512
    risloss synthesize --num-images 512 --out runs/synthesize   # data-free
    python examples/ptq_calibration.py --calibration runs/synthesize/synthetic.pt
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from risloss import evaluate
from risloss.data import load_dataset
from risloss.models import DEFAULT_TEACHER, load_pretrained, pretrained_info

# torch.export's notes on the traced graph are not this script's business.
warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def calibration_images(source: str, teacher: str, n: int, seed: int) -> torch.Tensor:
    """``n`` images in the teacher's input space: noise, real training images or a file."""
    shape = tuple(pretrained_info(teacher)["input_shape"])
    rng = torch.Generator().manual_seed(seed)
    if source == "noise":  # the normalized inputs have zero mean and unit variance
        return torch.randn(n, *shape, generator=rng)
    if source == "real":
        train = load_dataset(pretrained_info(teacher)["dataset"], "train")
        return train.images[torch.randperm(len(train), generator=rng)[:n]]
    path = Path(source)
    if not path.is_file():
        raise SystemExit(f"--calibration: expected noise, real or a .pt file, got {source!r}")
    data = torch.load(path, weights_only=True)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != shape:
        raise SystemExit(f"--calibration: {path} needs an 'images' tensor (N, {shape})")
    return images[:n].float()


def quantize_w8a8(model: nn.Module, images: torch.Tensor, batch_size: int) -> nn.Module:
    """PT2E PTQ: int8 per-channel weights, uint8 activations (torchao's X86 Inductor quantizer)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batch = torch.export.Dim("batch")  # any batch size, calibration and evaluation alike
    graph = torch.export.export(
        copy.deepcopy(model).eval(), (images[:2],), dynamic_shapes=({0: batch},)
    ).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch_images in images.split(batch_size):  # observers record the activation ranges
            prepared(batch_images)
    int8 = convert_pt2e(prepared)
    allow_exported_model_train_eval(int8)  # evaluate() calls .eval() on it
    return int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="a shipped teacher")
    parser.add_argument("--calibration", default="noise", help="noise, real or a .pt file")
    parser.add_argument("--num-images", type=int, default=256, help="calibration images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    teacher = load_pretrained(args.teacher)
    images = calibration_images(args.calibration, args.teacher, args.num_images, args.seed)
    int8 = quantize_w8a8(teacher, images, args.batch_size)
    test = load_dataset(pretrained_info(args.teacher)["dataset"], "test")
    if args.eval_limit is not None:
        test = Subset(test, range(min(args.eval_limit, len(test))))
    print(f"calibration: {args.calibration} ({len(images)} images)")
    print(f"full-precision top-1: {evaluate(teacher, test):.2f}%")
    print(f"W8A8 top-1: {evaluate(int8, test):.2f}%")


if __name__ == "__main__":
    main()
