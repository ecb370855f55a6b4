"""Set up a local environment and run an odenets job: the two quickstart commands.

    python3 experiments/bootstrap.py quickstart [args...]  # the main job: ResNet vs ODE-Net on MNIST-1D
    python3 experiments/bootstrap.py test [pytest args...]  # the default test suite
    python3 experiments/bootstrap.py demo [args...]         # every integrator and gradient on a toy model

Needs only Python >= 3.11 with pip and venv. The first call creates ``.venv/`` in the
repository root and installs odenets (editable) with its test extras; later calls reuse it
and reinstall only when ``pyproject.toml`` changed. Nothing outside ``.venv/`` is touched.
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

# name -> (what it runs, default arguments appended when the user gives none)
JOBS = {
    "quickstart": (["experiments/quickstart.py"], []),
    "demo": (["experiments/demo.py"], []),
    "test": (["-m", "pytest"], ["-n", "2", "-m", "not slow"]),
}


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fingerprint() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{EXTRAS}|{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 the user has)
        sys.exit(f"odenets needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not python().exists():
        print(f"[bootstrap] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == fingerprint():
        return
    print(f"[bootstrap] installing odenets[{EXTRAS}] into {VENV} (first run only)", flush=True)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["-e", f"{ROOT}[{EXTRAS}]"], check=True, cwd=ROOT)
    STAMP.write_text(fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in JOBS:
        given = repr(argv[0]) if argv else "nothing"
        print(f"usage: python3 experiments/bootstrap.py {{{'|'.join(JOBS)}}} [args...]; got {given}",
              file=sys.stderr)
        return 2
    job, extra = argv[0], argv[1:]
    ensure_environment()
    command, defaults = JOBS[job]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([str(python()), *command, *(extra or defaults)], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
