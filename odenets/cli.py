"""The `odenets` command line.

    odenets run [--resume] [-m] experiment=NAME key=value ...   train (Hydra config groups), or run a study:
    odenets run experiment=STUDY [study.size=smoke]             report.md, figures, results.json (odenets.study)
    odenets report RUN_DIR [RUN_DIR ...] [--out DIR]            side-by-side table + curves -> report.md
    odenets bench [--quick] [--cases ...]                       benchmarks vs peers (source checkout)

`run` composes the config groups data, model, integrator, gradient, optim (generated from the
registries: every registered dataset, family, integrator, ... is an option) with an experiment
(configs/experiment/<name>.yaml, shipped with the package): `integrator=rk4 gradient=adjoint`
swaps one axis, `-m model.depth=8,16` sweeps, `hydra.run.dir=DIR` places the run, `--resume`
(or `resume=true`) continues the run in that directory from its last checkpoint; `~integrator`
leaves the integrator to the model family (what an unset group means). Every job's config is
checked before the first run directory is written.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path
from typing import NoReturn, cast

COMMANDS = ("run", "report", "bench")
PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root when odenets runs from a source checkout


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"odenets: error: {message}", file=sys.stderr)
    sys.exit(code)


def config_dir() -> Path | None:
    """The directory holding experiment/<name>.yaml: odenets/configs in an installed wheel,
    configs/ in a source checkout; None if neither exists (the groups still compose)."""
    for candidate in (PACKAGE / "configs", CHECKOUT / "configs"):
        if (candidate / "experiment").is_dir():
            return candidate
    return None


def compose(overrides=()) -> dict:
    """The config `odenets run <overrides>` trains with, as the dict `fit` takes (no run
    directory is made): `fit(compose(["experiment=toy", "optim.lr=0.1"]), run_dir)`.

    The registries' groups are regenerated first, so anything registered in this process is an
    option. `resume` is a switch of the command, not part of the config: it is left out. With no
    model chosen, the model follows the data's task (`Defaults.model_for_task`).
    """
    return _compose(overrides)[0]


def _compose(overrides) -> tuple[dict, str | None]:
    """compose(overrides), and the model the data's task chose (None when the default stands)."""
    from hydra import compose as hydra_compose
    from hydra import initialize, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from odenets.train.groups import PRIMARY, store

    store()
    GlobalHydra.instance().clear()
    directory = config_dir()
    init = (initialize_config_dir(config_dir=str(directory), version_base="1.3") if directory
            else initialize(config_path=None, version_base="1.3"))
    with init:
        cfg = hydra_compose(PRIMARY, overrides=list(overrides), return_hydra_config=True)
        model = _model_for_data(cfg, overrides)
        if model is not None:  # the default model follows the data's task: compose again with it
            cfg = hydra_compose(PRIMARY, overrides=[f"model={model}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.choices.*} in the name
    with open_dict(cfg):
        del cfg["hydra"], cfg["resume"]
        if cfg["study"] is None:  # a training run: no study key, as its config.yaml records it
            del cfg["study"]
    return cast(dict, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)), model


def _model_for_data(cfg, overrides) -> str | None:
    """The model a run takes when none was chosen (by the command line or the experiment) and the
    data's task has its own default (Defaults.model_for_task); None when the composed one stands."""
    from odenets import data as datasets
    from odenets.train.config import Defaults

    defaults = Defaults()
    chosen = any(o.lstrip("+~").split("=")[0] == "model" for o in overrides)
    if chosen or cfg.hydra.runtime.choices.get("model") != defaults.model or not cfg.get("data"):
        return None
    try:
        spec = dict(cfg.data)
        task = datasets.dataset(spec.pop("name"), **spec).task
    except (ValueError, TypeError, KeyError):
        return None  # a bad data config: RunConfig.parse names it
    return dict(defaults.model_for_task).get(task)


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job a (multi)run starts: a sweep's cartesian product."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [cast(str, o.input_line)] for o in parsed]  # set on every parsed override
    return [list(job) for job in itertools.product(*choices)]


STUDY_KEYS = ("experiment", "seed", "name", "study", "hydra")  # what a study's command line may set


def check(overrides: list[str], multirun: bool = False, resume: bool = False) -> set[str | None]:
    """Compose and parse every job's config; the first bad one fails the command at once. Returns the
    models the data's task chose for the jobs (None for a job whose model stands as composed)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from odenets.train.config import RunConfig

    chosen = set()
    for job in _jobs(overrides, multirun):
        where = f" (job {' '.join(job)})" if multirun else ""
        try:
            cfg, model = _compose(job)
            parsed = RunConfig.parse(cfg)
        except (ValueError, TypeError, KeyError, HydraException, OmegaConfBaseException) as err:
            _fail(f"{err}{where}".strip())
        chosen.add(model)
        if parsed.study is not None:
            _check_study(parsed.study.name, job, resume, where)
    return chosen


def _check_study(name: str, job: list[str], resume: bool, where: str) -> None:
    """A study chooses its own data, models and solvers: a training override would be ignored, so it is
    refused; a study has no --resume (it runs again, in minutes, into a new directory)."""
    ignored = [o for o in job if o.lstrip("+~").split("=")[0].split(".")[0] not in STUDY_KEYS]
    if ignored:
        _fail(f"experiment={name} is a study: it chooses its own data, models and solvers, so "
              f"{', '.join(ignored)} would be ignored; a study takes study.size=smoke|full, "
              f"+study.<option>=value, seed, name and hydra.* (its options: the dataclass in "
              f"experiments/studies/{name}.py){where}")
    if resume:
        _fail(f"experiment={name} is a study: it has no --resume; run it again (a new directory){where}")


def run(argv: list[str]) -> None:
    """`odenets run`: check every job's config, then train each under Hydra (run or multirun)."""
    import hydra
    from omegaconf import OmegaConf

    from odenets.train.groups import PRIMARY, store

    resume = "--resume" in argv
    argv = [a for a in argv if a != "--resume"]
    overrides = [a for a in argv if ("=" in a or a.startswith("~")) and not a.startswith("-")]
    multirun = bool({"-m", "--multirun"} & set(argv))
    chosen = check(overrides, multirun=multirun, resume=resume)
    if len(chosen) > 1:  # Hydra takes one model default for a whole sweep: its jobs' data disagree on it
        models = ", ".join(sorted(m or "the composed default" for m in chosen))
        _fail(f"the jobs of this sweep need different models for their data ({models}); choose the model "
              f"on the command line (model=...) or sweep each kind of data on its own")
    if chosen and None not in chosen:  # the data's own default model, as compose chose it
        argv = [f"model={chosen.pop()}", *argv]
    directory = config_dir()

    failures: list[str] = []  # a sweep's failed jobs: the other jobs still run

    @hydra.main(config_path=str(directory) if directory else None, config_name=PRIMARY, version_base="1.3")
    def task(cfg):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from odenets.train.loop import Diverged, Interrupted, fit
        from odenets.train.rundir import table

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        config = cast(dict, OmegaConf.to_container(cfg, resolve=True))
        again = bool(config.pop("resume", False)) or resume
        sweep = hydra_cfg.mode == RunMode.MULTIRUN

        def failed(err: Exception, code: int):
            if not sweep:
                _fail(str(err), code)
            failures.append(f"job {hydra_cfg.job.num} ({run_dir}): {err}")
            print(f"odenets: job {hydra_cfg.job.num} failed, the sweep goes on: {err}", file=sys.stderr)

        if config.get("study") is not None:
            return _study(config, run_dir, failed)
        try:
            summary = fit(config, run_dir, resume=again)
        except Diverged as err:
            return failed(err, 1)
        except (ValueError, TypeError, FileExistsError, FileNotFoundError, KeyError) as err:
            return failed(err, 2)
        except KeyboardInterrupt as err:  # one line: where it stopped, and how to go on
            command = ["odenets", "run", *hydra_cfg.overrides.task, f"hydra.run.dir={run_dir}"]
            if isinstance(err, Interrupted):
                kept = ("no checkpoint yet, a resume starts over" if err.checkpoint is None
                        else f"a resume continues from the checkpoint of step {err.checkpoint}")
                print(f"odenets: interrupted at step {err.step} of {err.total} (epoch {err.epoch}); {kept}: "
                      f"{shlex.join([*command, '--resume'])}", file=sys.stderr)
            else:
                print(f"odenets: interrupted before training started; start it again with: {shlex.join(command)}",
                      file=sys.stderr)
            sys.exit(130)
        print("\n".join(["", *table([summary]), "", f"run directory: {run_dir}",
                         f"figure: {run_dir / 'figures' / 'curves.png'}", f"report: {run_dir / 'report.md'}"]))

    store()
    sys.argv = ["odenets run", *argv]
    task()
    if failures:
        _fail(f"{len(failures)} job(s) of the sweep failed (the others finished):\n  " + "\n  ".join(failures), 1)


def _study(config: dict, run_dir: Path, failed) -> None:
    """One study run: its findings in a line each, then where the report is."""
    from odenets.study import run_config

    try:
        results = run_config(config, run_dir)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, KeyError) as err:
        return failed(err, 2)
    lines = [f"  {'holds' if f['holds'] else 'DOES NOT HOLD'}: {key}: {f['measured']}"
             for key, f in results["findings"].items()]
    print("\n".join([f"study {results['study']} ({results['size']}): {results['findings_held']} of "
                      f"{results['findings_total']} findings hold, {results['wall_time_s']:.1f} s", *lines, "",
                      f"run directory: {run_dir}", f"report: {run_dir / 'report.md'}"]))


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
    """`python -m experiments.benchmarks` in the source checkout this odenets runs from."""
    import subprocess

    if not (CHECKOUT / "experiments" / "benchmarks").is_dir():
        _fail(f"odenets bench needs the source checkout (no experiments/benchmarks/ in {CHECKOUT}): clone the "
              f"repository, pip install -e it, and run odenets bench there")
    sys.exit(subprocess.call([sys.executable, "-m", "experiments.benchmarks", *argv], cwd=CHECKOUT))


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
