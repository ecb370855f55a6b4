"""Run the benchmark cases, each in its own process, then render RESULTS.md from their JSON.

    python -m experiments.benchmarks [--quick] [--cases sizes,adaptive,...] [--out DIR]
                                     [--torch-python PY|none] [--render-only]

Writes DIR/results/<case>.json, DIR/results/run.json, DIR/RESULTS.md and DIR/figures/ (DIR:
experiments/benchmarks, or runs/benchmarks-quick with --quick). A case runs in its own process
because cases set process-wide options (XLA_FLAGS for forced host devices). --quick runs every
case at a smoke-test size: its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import CASES, common, render

QUICK_OUT = Path("runs") / "benchmarks-quick"


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (numbers measure nothing)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {common.HERE})")
    parser.add_argument("--torch-python", default=os.environ.get("ODENETS_TORCH_PYTHON", sys.executable),
                        help="interpreter with torch + torchdiffeq (default $ODENETS_TORCH_PYTHON, else this "
                             "one); 'none' skips the torch peers")
    parser.add_argument("--render-only", action="store_true", help="render DIR/results/*.json, measure nothing")
    opts = parser.parse_args(argv)
    opts.cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    bad = [c for c in opts.cases if c not in CASES]
    if bad or not opts.cases:
        parser.error(f"unknown case(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                     f"valid choices: {', '.join(CASES)}")
    opts.out = (opts.out or (QUICK_OUT if opts.quick else common.HERE)).resolve()
    return opts


def torch_line(python: str | None) -> str:
    if python is None:
        return "not used (--torch-python none)"
    code = "import torch, torchdiffeq; print(torch.__version__, torchdiffeq.__version__)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return f"not installed under {python} (pip install -e .[bench])"
    return "torch {}, torchdiffeq {} (under {})".format(*done.stdout.split(), python)


def main(argv=None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    if not opts.render_only:
        python, start, failed = common.torch_python(opts.torch_python), time.perf_counter(), {}
        for case in opts.cases:
            print(f"\n===== case {CASES[case]}: {case}", flush=True)
            (opts.out / "results" / f"{case}.json").unlink(missing_ok=True)
            cmd = [sys.executable, "-m", f"{__package__}.{case}", "--out", str(opts.out),
                   "--torch-python", str(python)] + ["--quick"] * opts.quick
            rc = subprocess.call(cmd, cwd=common.ROOT)
            if rc:
                failed[case] = rc
        run = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "wall_seconds": time.perf_counter() - start,
               "quick": opts.quick, "cases": opts.cases, "failed": failed, "machine": common.machine(),
               "torch": torch_line(python)}
        common.save_json(opts.out / "results" / "run.json", run)
    path = render.render(opts.out)
    print(f"wrote {path} and {opts.out / 'figures'}/")
    return 1 if not opts.render_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
