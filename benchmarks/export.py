"""The exported student in ONNX Runtime: agreement with the simulation, file size, CPU speed.

For the shipped teacher quantized by ``risloss quantize`` at W8A8 and at W4A4 (one run each,
the default budget, seed 0; the runs are made first when their folders are missing), the
student is exported with :func:`risloss.export.export_run`'s defaults and measured against the
fake-quantized student it came from and against the float32 teacher exported to ONNX:

- top-1 on the whole Fashion-MNIST test split, in ONNX Runtime and in the simulation, the
  per-image agreement of their predictions and the largest logit difference;
- the file sizes;
- ONNX Runtime CPU latency at batch 1 (median) and throughput at batch 64, with one thread and
  with all of the machine's threads, as ratios to the float32 model measured in the same
  process, the two models timed in alternation (speed is measured here, never in a test);
- the operators of the graph ONNX Runtime runs (its optimized graph, by type): integer kernels
  (``QLinearConv``, ...) or float ones fed by ``DequantizeLinear``.

Besides the default export of each run, the W4A4 student is also written with 8-bit containers
and its BatchNorm folded (``int4=False, fold_batchnorm=True``): the form ONNX Runtime can run
on its 8-bit integer kernels. Each configuration writes
``benchmarks/results/export/export-<name>.json`` (skipped when it exists); ``--table`` prints
the tables of ``docs/guides/deploy-onnx.md``.

    python benchmarks/export.py            # the runs (if missing), then every measurement
    python benchmarks/export.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "export"
RUNS = ROOT / "runs" / "export"
MODEL = "resnet20_fashion_mnist"

# name -> (run folder, bits, export options, label)
CONFIGS: dict[str, tuple[str, int, dict[str, Any], str]] = {
    "w8a8": ("w8a8", 8, {}, "W8A8 (default export)"),
    "w4a4": ("w4a4", 4, {}, "W4A4 (default export: int4/uint4)"),
    "w4a4-int8": (
        "w4a4",
        4,
        {"int4": False, "fold_batchnorm": True},
        "W4A4 in 8-bit containers, BatchNorm folded",
    ),
}


def _ensure_run(folder: Path, bits: int, iters: int | None) -> None:
    """Make the quantize run if its folder holds no finished run (one thread)."""
    if (folder / "metrics.json").is_file():
        return
    command = [
        sys.executable, "-m", "risloss", "quantize", "--model", MODEL,
        "--w-bits", str(bits), "--a-bits", str(bits), "--seed", "0",
        "--out", str(folder), "--quiet",
    ]  # fmt: skip
    if iters is not None:
        command += ["--iters", str(iters)]
    print("running:", " ".join(command[1:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, cwd=ROOT)


def _session(path: Path, threads: int, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _logits(session: Any, images: Any, batch: int = 500) -> Any:
    import numpy as np

    parts = [
        session.run(None, {"input": images[i : i + batch]})[0] for i in range(0, len(images), batch)
    ]
    return np.concatenate(parts)


def _timings(sessions: dict[str, Any], x: Any, repeats: int) -> dict[str, float]:
    """Median seconds per call of each session, the sessions called in alternation."""
    for session in sessions.values():  # warm-up
        for _ in range(3):
            session.run(None, {"input": x})
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            session.run(None, {"input": x})
            seconds[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in seconds.items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Export, evaluate and time one configuration; write and return its JSON record."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from risloss.data import load_dataset
    from risloss.export import load_run_student
    from risloss.models import load_pretrained, pretrained_info
    from risloss.quant import export_onnx

    torch.set_num_threads(1)
    run_name, bits, options, label = CONFIGS[name]
    run = Path(args.runs) / run_name
    _ensure_run(run, bits, args.iters)
    metrics = json.loads((run / "metrics.json").read_text())
    work = Path(args.runs) / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(pretrained_info(MODEL)["input_shape"])
    example = torch.zeros(1, *shape)

    student = load_run_student(run)
    quant_path = export_onnx(student, example, work / f"{name}.onnx", **options)
    float_path = export_onnx(load_pretrained(MODEL), example, work / "float32.onnx")

    test = load_dataset(pretrained_info(MODEL)["dataset"], "test")
    images, labels = test.images, test.labels.numpy()
    with torch.no_grad():
        simulated = torch.cat([student(b) for b in images.split(500)]).numpy()
    exported = _logits(_session(quant_path, 1), images.numpy())
    float_logits = _logits(_session(float_path, 1), images.numpy())
    sim_pred, onnx_pred = simulated.argmax(1), exported.argmax(1)

    kernels_path = work / f"{name}.optimized.onnx"
    _session(quant_path, 1, optimized=kernels_path)
    kernels = Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in onnx.load(kernels_path).graph.node
    )
    written = Counter(n.op_type for n in onnx.load(quant_path).graph.node)

    speed: dict[str, Any] = {}
    all_threads = os.cpu_count() or 1
    for threads in sorted({1, all_threads}):
        sessions = {
            "float32": _session(float_path, threads),
            "exported": _session(quant_path, threads),
        }
        one = _timings(sessions, images[:1].numpy(), args.repeats_b1)
        many = _timings(sessions, images[:64].numpy(), args.repeats_b64)
        speed[f"threads_{threads}"] = {
            "threads": threads,
            "batch1_ms": {k: v * 1000 for k, v in one.items()},
            "batch64_images_per_s": {k: 64 / v for k, v in many.items()},
            "batch1_speedup": one["float32"] / one["exported"],
            "batch64_speedup": many["float32"] / many["exported"],
        }

    sim_top1 = float((sim_pred == labels).mean() * 100)
    onnx_top1 = float((onnx_pred == labels).mean() * 100)
    config = metrics["config"]
    record = {
        "suite": "export",
        "name": name,
        "label": label,
        "model": MODEL,
        "w_bits": config["w_bits"],
        "a_bits": config["a_bits"],
        "run": {
            "command": f"risloss quantize --model {MODEL} --w-bits {bits} --a-bits {bits} --seed 0"
            + (f" --iters {config['iters']}" if args.iters is not None else ""),
            "iters": config["iters"],
            "warmup": config["warmup"],
            "method": config["method"],
            "seed": config["seed"],
            "quant_top1": metrics.get("quant_top1"),
            "train_seconds": metrics.get("train_seconds"),
        },
        "export_options": options,
        "opset": onnx.load(quant_path).opset_import[0].version,
        "num_test_images": len(labels),
        "fp_top1_onnx": float((float_logits.argmax(1) == labels).mean() * 100),
        "simulated_top1": sim_top1,
        "onnx_top1": onnx_top1,
        "top1_difference": onnx_top1 - sim_top1,
        "agreement": float((sim_pred == onnx_pred).mean() * 100),
        "max_logit_difference": float(np.abs(exported - simulated).max()),
        "file_bytes": {"float32": float_path.stat().st_size, "exported": quant_path.stat().st_size},
        "written_operators": dict(sorted(written.items())),
        "runtime_operators": dict(sorted(kernels.items())),
        "speed": speed,
        "machine": {
            "cpu": _cpu_name(),
            "cpu_count": all_threads,
            "platform": platform.platform(),
        },
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
    }
    path = Path(args.results) / f"export-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return record


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


def _operators(ops: dict[str, int]) -> str:
    shown = [
        f"{name} {count}"
        for name, count in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))
        if not name.endswith(("Flatten", "GlobalAveragePool"))
    ]
    return ", ".join(shown)


def table(results: str | Path = RESULTS) -> str:
    """The Markdown tables of the committed results (accuracy and size; speed; operators)."""
    records = {
        r["name"]: r
        for r in (json.loads(p.read_text()) for p in sorted(Path(results).glob("export-*.json")))
    }
    ordered = [records[n] for n in CONFIGS if n in records]
    if not ordered:
        return "No export results committed yet."
    first = ordered[0]
    iters = sorted({r["run"]["iters"] for r in ordered})
    lines = [
        f"Shipped teacher `{first['model']}` quantized by `risloss quantize` (RIS, "
        f"{', '.join(map(str, iters))} iterations, seed 0), exported with "
        f"`risloss.quant.export_onnx`; top-1 (%) on the {first['num_test_images']:,} test "
        f"images; the float32 teacher in ONNX Runtime: {first['fp_top1_onnx']:.2f}%.",
        "",
        "| export | simulation top-1 | ONNX Runtime top-1 | difference | agreement (%) "
        "| largest logit difference | opset | file (float32: "
        f"{_kib(first['file_bytes']['float32'])}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        lines.append(
            f"| {r['label']} | {r['simulated_top1']:.2f} | {r['onnx_top1']:.2f} "
            f"| {r['top1_difference']:+.2f} | {r['agreement']:.2f} "
            f"| {r['max_logit_difference']:.3g} | {r['opset']} "
            f"| {_kib(r['file_bytes']['exported'])} "
            f"({r['file_bytes']['exported'] / r['file_bytes']['float32']:.0%}) |"
        )
    machine = first["machine"]
    lines += [
        "",
        f"ONNX Runtime {first['versions']['onnxruntime']} on the CPU ({machine['cpu']}, "
        f"{machine['cpu_count']} threads, shared with other work while measured): speed of the "
        "exported model relative to the float32 model, timed in alternation in one process "
        "(above 1: faster); batch 1 as median latency, batch 64 as throughput.",
        "",
        "| export | threads | batch 1: float32 | batch 1: exported | speed-up "
        "| batch 64: float32 | batch 64: exported | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        for s in r["speed"].values():
            b1, b64 = s["batch1_ms"], s["batch64_images_per_s"]
            lines.append(
                f"| {r['label']} | {s['threads']} | {b1['float32']:.2f} ms "
                f"| {b1['exported']:.2f} ms | {s['batch1_speedup']:.2f}x "
                f"| {b64['float32']:,.0f} img/s | {b64['exported']:,.0f} img/s "
                f"| {s['batch64_speedup']:.2f}x |"
            )
    lines += [
        "",
        "The operators ONNX Runtime runs (its optimized graph, by type; pooling and flatten "
        "left out):",
        "",
        "| export | operators run |",
        "|---|---|",
    ]
    for r in ordered:
        lines.append(f"| {r['label']} | {_operators(r['runtime_operators'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--runs", default=str(RUNS), help="where the quantize runs are made")
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="iterations of runs still to be made (default: risloss quantize's)",
    )
    parser.add_argument("--repeats-b1", type=int, default=300)
    parser.add_argument("--repeats-b64", type=int, default=40)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="print the docs tables and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    for name in args.configs:
        path = Path(args.results) / f"export-{name}.json"
        if path.exists():
            print(f"{path.name}: done already")
            continue
        r = measure(name, args)
        print(
            f"{path.name}: top-1 {r['onnx_top1']:.2f}% in ONNX Runtime, "
            f"{r['simulated_top1']:.2f}% simulated, agreement {r['agreement']:.2f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
