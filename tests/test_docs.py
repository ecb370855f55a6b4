"""The API reference (experiments/docs, mkdocs + mkdocstrings) builds in strict mode, documents
every public name, fails on a broken reference, and its "Extending odenets" page works as written."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "experiments" / "docs"
PAGES = {"odenets": "odenets", "odenets.fields": "fields", "odenets.models": "models", "odenets.data": "data",
         "odenets.train": "train", "odenets.analysis": "analysis", "odenets.study": "study"}


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:  # no __all__: what the module itself defines without a leading underscore
        names = [n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
                 == module.__name__ and (inspect.isclass(v) or inspect.isfunction(v))]
    return [n for n in names if not inspect.ismodule(getattr(module, n))]


def test_the_reference_builds_and_documents_every_public_name(tmp_path):
    done = build(DOCS / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    for module_name, page in PAGES.items():
        module = importlib.import_module(module_name)
        html = (tmp_path / "site" / "api" / page / "index.html").read_text()
        for name in public_names(module):
            obj = getattr(module, name)
            # a function named like its own module (fields.stack, analysis.observe, models.trajectory) is
            # listed under the module's path: its page documents it by the path where it is defined
            ids = {f'id="{module_name}.{name}"', f'id="{getattr(obj, "__module__", "")}.{name}"'}
            assert any(i in html for i in ids), f"{module_name}.{name} is not in the reference"
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert (obj.__doc__ or "").strip(), f"{module_name}.{name} has no docstring"


@pytest.mark.slow
def test_a_broken_reference_fails_the_build(tmp_path):
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("site"))
    config = (copy / "mkdocs.yml").read_text().replace("paths: [../..]", f"paths: [{ROOT}]")
    (copy / "mkdocs.yml").write_text(config)
    index = copy / "pages" / "index.md"
    index.write_text(index.read_text() + "\nSee [the solver][odenets.odeint_that_does_not_exist].\n")
    done = build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "odenets.odeint_that_does_not_exist" in done.stderr + done.stdout
    index.write_text(index.read_text().replace("odeint_that_does_not_exist", "odeint"))
    assert build(copy / "mkdocs.yml", tmp_path / "site2").returncode == 0  # the same page with a good reference


@pytest.mark.slow
def test_the_extending_page_works_as_written(tmp_path):
    """Every python block of extending.md, in order, as one script: each block registers a class and
    checks that it works (an integrator's order, a gradient equal to Backprop's, a family, a dataset,
    a study run at its smoke size)."""
    text = (DOCS / "pages" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 6
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(blocks) + "\nprint('every block ran')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)
    assert done.returncode == 0 and "every block ran" in done.stdout, done.stderr[-3000:]
