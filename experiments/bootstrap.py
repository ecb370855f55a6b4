"""Set up a local environment and run an odenets job: the two quickstart commands.

    python3 experiments/bootstrap.py quickstart [args...]  # the main job: ResNet vs ODE-Net on MNIST-1D
    python3 experiments/bootstrap.py test [pytest args...]  # the default test suite
    python3 experiments/bootstrap.py demo [args...]         # every integrator and gradient on a toy model
    python3 experiments/bootstrap.py lint                   # the static checks: ruff, then pyright

Needs only Python >= 3.11 with pip and venv. The first call creates ``.venv/`` in the
repository root and installs odenets (editable) with its test extras (``lint``: its lint
extras, ruff and pyright); later calls reuse it and reinstall only when ``pyproject.toml``
changed. Nothing outside ``.venv/`` is touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".odenets-installed"
EXTRAS = "test"
LINT_EXTRAS = "lint"

# name -> (what it runs, default arguments appended when the user gives none)
JOBS = {
    "quickstart": (["experiments/quickstart.py"], []),
    "demo": (["experiments/demo.py"], []),
    "test": (["-m", "pytest"], ["-n", "2", "-m", "not slow"]),
}


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def lint_commands() -> list[list[str]]:
    """The static checks, each run with the venv's python: ruff (pyproject's [tool.ruff]) on the code,
    tests and experiments, and pyright (pyproject's [tool.pyright]) on odenets with the venv's packages."""
    return [
        ["-m", "ruff", "check", "odenets", "tests", "experiments"],
        ["-m", "pyright", "--pythonpath", str(python())],
    ]


def fingerprint(extras: str = EXTRAS) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{extras}|{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def ensure_environment(extras: str = EXTRAS) -> None:
    """The venv with odenets[extras] installed against the current pyproject.toml. The stamp holds one
    fingerprint per extra installed, so `test` and `lint` share the venv without reinstalling in turn."""
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 the user has)
        sys.exit(f"odenets needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not python().exists():
        print(f"[bootstrap] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    installed = STAMP.read_text().split() if STAMP.exists() else []
    if fingerprint(extras) in installed:
        return
    print(f"[bootstrap] installing odenets[{extras}] into {VENV} (first run only)", flush=True)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["-e", f"{ROOT}[{extras}]"], check=True, cwd=ROOT)
    current = {fingerprint(e) for e in (EXTRAS, LINT_EXTRAS)}  # stamps of an older pyproject.toml are dropped
    STAMP.write_text("\n".join([*(f for f in installed if f in current), fingerprint(extras)]))


def lint() -> int:
    """Run every static check (all of them, also after a failure); the first failure's exit status."""
    ensure_environment(LINT_EXTRAS)
    # PYRIGHT_PYTHON_IGNORE_WARNINGS: pyright's wrapper would ask PyPI whether a newer pyright exists
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYRIGHT_PYTHON_IGNORE_WARNINGS="1")
    codes = [subprocess.run([str(python()), *command], cwd=ROOT, env=env).returncode
             for command in lint_commands()]
    return next((code for code in codes if code), 0)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in (*JOBS, "lint"):
        given = repr(argv[0]) if argv else "nothing"
        print(f"usage: python3 experiments/bootstrap.py {{{'|'.join(JOBS)}}} [args...] | lint; got {given}",
              file=sys.stderr)
        return 2
    if argv[0] == "lint":
        if argv[1:]:
            print(f"usage: python3 experiments/bootstrap.py lint (no arguments); got {argv[1:]}", file=sys.stderr)
            return 2
        return lint()
    job, extra = argv[0], argv[1:]
    ensure_environment()
    command, defaults = JOBS[job]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([str(python()), *command, *(extra or defaults)], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
