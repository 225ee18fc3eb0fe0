"""Cost of extra student steps: a short default ``quantize`` run with ``student_steps`` 1 and 4.

The runs alternate in one process (one torch thread), round after round, so that drift of the
machine's load affects both alike; each run's process CPU time and wall time are recorded, and
the report gives the median of each and the ratio of the medians. The share of the run spent
after warm-up decides how much of the default run the ratio applies to: a run with
``iters=I``, ``warmup=W`` scales the student phase by ``(I - W) / I``.

    python benchmarks/student_steps_cost.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "student_steps_cost.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from risloss.training import TrainConfig, train

    times: dict[int, list[tuple[float, float]]] = {k: [] for k in args.steps}
    for r in range(args.rounds):
        order = args.steps if r % 2 == 0 else list(reversed(args.steps))
        for k in order:
            config = TrainConfig(
                iters=args.iters,
                warmup=args.iters // 3,
                student_steps=k,
                replay_size=4096 if k > 1 else 0,
                eval_limit=100,
            )
            with tempfile.TemporaryDirectory() as out:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                train(config, out, log=None, progress=False)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            times[k].append((cpu, wall))
            print(f"round {r}: student_steps={k}: cpu {cpu:.1f}s wall {wall:.1f}s", flush=True)
    base = args.steps[0]
    report = {
        "iters": args.iters,
        "warmup": args.iters // 3,
        "rounds": args.rounds,
        "torch_threads": 1,
        "runs": {str(k): [{"cpu_s": c, "wall_s": w} for c, w in v] for k, v in times.items()},
        "median_cpu_s": {str(k): statistics.median(c for c, _ in v) for k, v in times.items()},
        "median_wall_s": {str(k): statistics.median(w for _, w in v) for k, v in times.items()},
    }
    report["cpu_ratio"] = {
        str(k): report["median_cpu_s"][str(k)] / report["median_cpu_s"][str(base)]
        for k in args.steps
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(report["cpu_ratio"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
