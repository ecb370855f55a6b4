"""The `odenets` command line.

    odenets run [--resume] [-m] experiment=NAME key=value ...   train (Hydra config groups in configs/)
    odenets report RUN_DIR [RUN_DIR ...] [--out DIR]            side-by-side table + curves -> report.md
    odenets bench [--quick] [--cases ...] [--out RESULTS.md]    benchmarks vs peers (source checkout)

`run` composes configs/config.yaml with the groups data/, model/, integrator/, gradient/,
optim/, experiment/; `integrator=rk4 gradient=adjoint` swaps one axis, `-m model.depth=8,16`
sweeps, `hydra.run.dir=DIR` places the run, `--resume` (or `resume=true`) continues the run in
that directory from its last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
BENCH = Path(__file__).resolve().parent.parent / "experiments" / "benchmarks" / "__main__.py"
COMMANDS = ("run", "report", "bench")


def _fail(message: str, code: int = 2):
    print(f"odenets: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(overrides: list[str]) -> None:
    import hydra
    from omegaconf import OmegaConf

    if not CONFIG_DIR.is_dir():
        _fail(f"config directory {CONFIG_DIR} not found (odenets run needs the repository's configs/)")
    resume = "--resume" in overrides
    overrides = [o for o in overrides if o != "--resume"]

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        from odenets.train.loop import Diverged, fit
        from odenets.train.rundir import table

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        config = OmegaConf.to_container(cfg, resolve=True)
        again = bool(config.pop("resume", False)) or resume
        try:
            summary = fit(config, run_dir, resume=again)
        except Diverged as err:
            _fail(str(err), 1)
        except (ValueError, TypeError, FileExistsError, FileNotFoundError, KeyError) as err:
            _fail(str(err))
        print("\n".join(["", *table([summary]), "", f"run directory: {run_dir}",
                         f"figure: {run_dir / 'figures' / 'curves.png'}", f"report: {run_dir / 'report.md'}"]))

    sys.argv = ["odenets run", *overrides]
    task()


def report(argv: list[str]) -> None:
    from odenets.train.rundir import report as write_report
    from odenets.train.rundir import table

    parser = argparse.ArgumentParser(prog="odenets report", description="compare finished runs")
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (holding summary.json)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where report.md and comparison.png go")
    opts = parser.parse_args(argv)
    try:
        path, summaries = write_report(opts.runs, opts.out)
    except FileNotFoundError as err:
        _fail(str(err))
    print("\n".join([*table(summaries), "", f"report: {path}", f"figure: {path.parent / 'comparison.png'}"]))


def bench(argv: list[str]) -> None:
    """The benchmark runner of the source checkout (experiments/benchmarks), in this interpreter."""
    import subprocess

    if not BENCH.exists():
        _fail(f"odenets bench runs the benchmarks of a source checkout; {BENCH} does not exist "
              "(clone the repository and install it with pip install -e .)")
    sys.exit(subprocess.call([sys.executable, str(BENCH), *argv]))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; valid choices: {', '.join(COMMANDS)}")
    {"run": run, "report": report, "bench": bench}[command](rest)


if __name__ == "__main__":
    main()
