"""The notebooks of experiments/notebooks: each runs top to bottom at its small size, and the copy in
the repository holds the outputs of one real run at full size.

Every notebook asserts its own claims in its cells (a convergence slope, equality to rounding, memory
flat or growing in the step count, which methods stay bounded on a stiff problem), so a notebook
whose plots no longer show what its text says fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

FOLDER = Path(__file__).resolve().parent.parent / "experiments" / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_resnet_is_euler.ipynb", "02_integrators_and_gradients.ipynb",
                                          "03_train_and_analyse.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_one_full_run(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not run top to bottom once"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the stored outputs"
    first = "".join(o.get("text", "") for o in code[0].outputs if o.output_type == "stream")
    assert "size: full" in first  # the stored run is the full size


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_its_small_size(path, tmp_path, monkeypatch):
    monkeypatch.setenv("ODENETS_NOTEBOOK_SMALL", "1")
    # the kernel inherits this process' environment: an MPLBACKEND set here (experiments.benchmarks sets
    # Agg when imported) would keep ipykernel from drawing inline, and the notebook would show no figure
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures
