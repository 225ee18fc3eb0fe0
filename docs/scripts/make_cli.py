"""Write docs/cli.md, the command-line reference, from the parser itself.

    python docs/scripts/make_cli.py            # rewrite docs/cli.md
    python docs/scripts/make_cli.py --check    # exit 1 if docs/cli.md is out of date

tests/test_docs.py runs the check, so the page never drifts from ``risloss --help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "cli.md"

INTRO = """# Command line

`risloss` (or `python -m risloss`) runs the whole data-free job. Every command below prints this
text with `--help`; this page is generated from the same parser by
`python docs/scripts/make_cli.py`.

`quantize`, `distill` and `prune` share their options: the image source (`--method`), the
budget, checkpointing (`--resume`), and the generator objective. The options are generated from
the fields of [`TrainConfig`][risloss.training.TrainConfig] and
[`RISConfig`][risloss.objective.RISConfig]: each option's help, range and default are the
field's, and an option left out leaves the configuration's own default (some depend on the
command: `--lr-student`, `--kd-temperature`, ...). `synthesize` takes the same options less the
student's: it trains only the generator and writes a synthetic calibration set (see
[Calibrate PyTorch's own quantization](guides/ptq-calibration.md)). A run stopped with Ctrl-C
saves a checkpoint and exits with status 130 (Ctrl-C before the first checkpoint leaves the
output folder as it was). A folder that already holds a run (`checkpoint.pt` or
`metrics.json`) is refused unless `--resume` continues it or `--overwrite` starts over; with
`--overwrite` the old files stay until the new run has saved its first checkpoint.

A mistake (a bad option or value, an unreadable weights file or checkpoint, an output folder
that cannot be written, a device this machine lacks) ends in one line naming the option or the
file and exit status 2, before any work starts wherever possible; `--debug` (or
`RISLOSS_DEBUG=1`) shows the traceback behind it. A run prints one line on what it is about to do
and, when standard error is not a terminal (a script, CI), a progress line per tenth of the run
or per minute. Without matplotlib (`pip install 'risloss[plot]'`) everything but the loss plot
`losses.png` is written.
"""


def render() -> str:
    from risloss.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = [INTRO, "```text", parser.format_help().rstrip(), "```", ""]
        for name, p in sub.choices.items():
            parts += [f"## risloss {name}", "", "```text", p.format_help().rstrip(), "```", ""]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write docs/cli.md from the risloss parser.")
    p.add_argument("--check", action="store_true", help="only check the page is up to date")
    check = p.parse_args(argv).check
    text = render()
    if check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.name} is out of date: run python docs/scripts/make_cli.py")
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
