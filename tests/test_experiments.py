"""The scripts under experiments/ run (at a tiny size: they are benchmarks, never timed tests)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import odenets as on

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load(relative: str):
    path = EXPERIMENTS / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def run_script(relative: str, *args: str) -> str:
    """Run a script in its own process (benchmarks set process-wide JAX/equinox options)."""
    done = subprocess.run([sys.executable, str(EXPERIMENTS / relative), *args], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_demo_runs_and_its_gradients_check_out():
    out = run_script("demo.py", "--steps", "8")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["node"], ["resnet"])]
    # the demo runs in its own process, so it sees odenets' integrators, not the test suite's
    builtin = {n for n in on.integrator.names() if on.integrator.get(n).__module__.startswith("odenets.")}
    assert {r[1] for r in rows} == builtin
    # column "grad vs FD": relative error of a directional derivative against central differences
    assert all(float(r[-2]) < 1e-6 for r in rows), rows


def test_bootstrap_rejects_unknown_jobs(capsys):
    assert load("bootstrap.py").main(["deploy"]) == 2
    assert "{quickstart|demo|test}" in capsys.readouterr().err


def test_quickstart_runs_shipped_experiments_that_compose():
    from odenets.cli import compose
    from odenets.train.config import RunConfig

    quickstart = load("quickstart.py")
    for experiment in quickstart.EXPERIMENTS.values():
        assert (EXPERIMENTS.parent / "configs" / "experiment" / f"{experiment}.yaml").exists()
        RunConfig.parse(compose([f"experiment={experiment}", "optim.epochs=12"]))


def test_readme_example_runs(capsys):
    """The README's usage example is real code: run it as written."""
    readme = (EXPERIMENTS.parent / "README.md").read_text()
    code = readme.split("## Using it", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    assert "'nfe': 80, 'nfe_backward': 80, 'steps': 20, 'rejected': 0" in capsys.readouterr().out
