"""Quickstart: a discrete ResNet against an ODE-Net on MNIST-1D, then a side-by-side report.

    python experiments/quickstart.py            # short runs (a few minutes on two CPU cores)
    python experiments/quickstart.py --full     # the full recipes of configs/experiment/

Runs `odenets run experiment=mnist1d_resnet` and `experiment=mnist1d_odenet` into
runs/quickstart/<time>/{resnet,odenet}, then `odenets report` on both: a table (accuracy,
parameters, NFE, time, memory) and a figure of the training curves.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = {"resnet": "mnist1d_resnet", "odenet": "mnist1d_odenet"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full epochs (each run within 10 minutes on 2 cores)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the short runs (default 12)")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quickstart" / stamp)
    opts = parser.parse_args(argv)
    if opts.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {opts.epochs}")
    for label, experiment in EXPERIMENTS.items():
        overrides = [f"experiment={experiment}", f"hydra.run.dir={opts.out / label}"]
        if not opts.full:
            overrides.append(f"optim.epochs={opts.epochs}")
        print(f"== odenets run {' '.join(overrides)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "odenets.cli", "run", *overrides], cwd=ROOT)
        if done.returncode:
            return done.returncode
    print("\n== odenets report", flush=True)
    runs = [str(opts.out / label) for label in EXPERIMENTS]
    return subprocess.run([sys.executable, "-m", "odenets.cli", "report", *runs, "--out", str(opts.out)],
                          cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
