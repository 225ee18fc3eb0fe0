"""Calibration sets for PyTorch's own post-training quantization: noise, synthetic, real.

The shipped teacher is quantized to W8A8 by the PT2E flow of ``examples/ptq_calibration.py``
(torchao's ``prepare_pt2e`` / ``convert_pt2e`` with its X86 Inductor quantizer; the same
functions, loaded from the example) and evaluated on the whole test split, once per calibration
source and seed:

- ``noise``: Gaussian noise in the normalized input space, the floor;
- ``synthetic``: the images of a calibration file (``--synthetic FILE``, a ``.pt`` dict with an
  ``images`` tensor, such as the ``synthetic.pt`` of ``risloss synthesize``, whose
  ``metrics.json`` beside it is then summarized in the record), a random subset per seed;
- ``real``: real training images, a random subset per seed, the ceiling.

Each run writes ``benchmarks/results/ptq/ptq-<source>-w8a8-s<seed>.json`` (skipped when it
exists, like every benchmark here); ``--table`` prints the Markdown table of the docs. The
results of the FX flow the example used before (``prepare_fx`` / ``convert_fx``, the ``x86``
default configuration) are kept in ``benchmarks/results/ptq/fx/``
(``--table --results benchmarks/results/ptq/fx``).

    python benchmarks/ptq_calibration.py                          # noise and real, 3 seeds
    python benchmarks/ptq_calibration.py --synthetic calibration.pt
    risloss synthesize --num-images 512 --seed 1 --out runs/synthesize-s1
    python benchmarks/ptq_calibration.py --sources synthetic --seeds 1 \
        --synthetic runs/synthesize-s1/synthetic.pt   # one synthesis per seed
    python benchmarks/ptq_calibration.py --table
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ptq"
SOURCES = ("noise", "synthetic", "real")
LABELS = {
    "noise": "Gaussian noise",
    "synthetic": "synthetic images (data-free)",
    "real": "real training images",
}


def _example() -> ModuleType:
    """``examples/ptq_calibration.py``: the measured flow is the documented one."""
    spec = importlib.util.spec_from_file_location(
        "ptq_example", ROOT / "examples" / "ptq_calibration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(source: str, args: argparse.Namespace, seed: int, example: ModuleType) -> Any:
    import torch

    if source != "synthetic":
        return example.calibration_images(source, args.model, args.num_images, seed)
    images = example.calibration_images(args.synthetic, args.model, 1 << 62, seed)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[pick[: args.num_images]]


def _synthesis(calibration_file: str) -> dict[str, Any] | None:
    """How a calibration file was synthesized: the ``metrics.json`` of ``risloss synthesize``
    beside it, summarized (``None`` for a file from elsewhere)."""
    path = Path(calibration_file).parent / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    if "images" not in metrics or "synthesis" not in metrics:
        return None
    config = metrics["config"]
    return {
        **{k: config[k] for k in ("model", "method", "iters", "batch_size", "seed")},
        "generator_conditioning": config.get("generator_conditioning"),
        "num_images": metrics["num_images"],
        "agreement": metrics["images"]["agreement"],
        "g_agree": metrics["synthesis"].get("g_agree"),
        "train_seconds": metrics.get("train_seconds"),
    }


def _torchao_version() -> str | None:
    try:
        import torchao
    except ImportError:
        return None
    return str(torchao.__version__)


def _flow(records: list[dict[str, Any]]) -> str:
    """The flow the records were made with, in words (the FX flow for records without one)."""
    flows = {r.get("config", {}).get("flow", "FX") for r in records}
    if any("PT2E" in f for f in flows):
        return "PyTorch's PT2E flow (torchao, X86 Inductor quantizer)"
    return "PyTorch's FX flow (`x86` configuration)"


def run(source: str, seed: int, args: argparse.Namespace, fp_top1: float) -> dict[str, Any]:
    """Calibrate, quantize and evaluate once; write and return the JSON record."""
    import torch

    from risloss import evaluate
    from risloss.data import load_dataset
    from risloss.models import load_pretrained, pretrained_info

    torch.set_num_threads(1)
    example = _example()
    t0 = time.monotonic()
    teacher = load_pretrained(args.model)
    images = _images(source, args, seed, example)
    int8 = example.quantize_w8a8(teacher, images, args.batch_size)
    test = load_dataset(pretrained_info(args.model)["dataset"], "test")
    top1 = evaluate(int8, test)
    config = {
        "seed": seed,
        "method": source,
        "num_images": len(images),
        "batch_size": args.batch_size,
        "calibration_file": None if source != "synthetic" else Path(args.synthetic).name,
        "synthesis": None if source != "synthetic" else _synthesis(args.synthetic),
        "flow": "torchao PT2E (torch.export, prepare_pt2e, convert_pt2e)",
        "qconfig": "X86InductorQuantizer, get_default_x86_inductor_quantization_config()",
        "torchao_version": _torchao_version(),
    }
    record = {
        "suite": "ptq", "task": "quantize", "row": source, "method": source, "seed": seed,
        "profile": "ptq", "w_bits": 8, "a_bits": 8, "model": args.model,
        "fp_top1": fp_top1, "quant_top1": top1, "student_top1": top1,
        "num_test_images": len(test), "config": config,
        "wall_seconds": time.monotonic() - t0, "torch_version": torch.__version__,
        "torch_threads": 1, "device": "cpu",
    }  # fmt: skip
    path = Path(args.results) / f"ptq-{source}-w8a8-s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def table(results: str | Path = RESULTS) -> str:
    """The Markdown table of the committed results: mean ± std over seeds per source."""
    records = [json.loads(p.read_text()) for p in sorted(Path(results).glob("ptq-*.json"))]
    if not records:
        return "No PTQ calibration results committed yet."
    fp = records[0]["fp_top1"]
    lines = [
        f"Shipped teacher `{records[0]['model']}` (full precision: {fp:.2f}%), W8A8 by "
        f"{_flow(records)}, {records[0]['config']['num_images']} calibration images, "
        f"test top-1 (%) on {records[0]['num_test_images']:,} images, mean ± std over seeds.",
        "",
        "| calibration set | W8A8 top-1 | seeds |",
        "|---|---|---|",
    ]
    for source in SOURCES:
        values = [r["quant_top1"] for r in records if r["row"] == source]
        if not values:
            lines.append(f"| {LABELS[source]} | not run yet | 0 |")
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(
            f"| {LABELS[source]} | {statistics.mean(values):.2f} ± {std:.2f} | {len(values)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20_fashion_mnist", help="a shipped teacher")
    parser.add_argument("--synthetic", default=None, help="calibration file of synthetic images")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="print the docs table and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    sources = args.sources or [s for s in SOURCES if s != "synthetic" or args.synthetic]
    if "synthetic" in sources and not args.synthetic:
        parser.error("--sources synthetic needs --synthetic FILE")
    if args.synthetic and not Path(args.synthetic).is_file():
        parser.error(f"--synthetic: file {args.synthetic!r} does not exist")

    import torch

    from risloss import evaluate
    from risloss.data import load_dataset
    from risloss.models import load_pretrained, pretrained_info

    torch.set_num_threads(1)
    fp_top1 = None
    for source in sources:
        for seed in args.seeds:
            path = Path(args.results) / f"ptq-{source}-w8a8-s{seed}.json"
            if path.exists():
                print(f"{path.name}: done already")
                continue
            if fp_top1 is None:
                test = load_dataset(pretrained_info(args.model)["dataset"], "test")
                fp_top1 = evaluate(load_pretrained(args.model), test)
            record = run(source, seed, args, fp_top1)
            print(f"{path.name}: W8A8 top-1 {record['quant_top1']:.2f}% (fp {fp_top1:.2f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
