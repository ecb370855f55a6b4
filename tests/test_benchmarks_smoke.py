"""The benchmark suite runs end to end at smoke-test size (benchmarks are scripts, never timed tests).

One run of `python -m experiments.benchmarks --quick` (every case, no torch peer): RESULTS.md has
a section per case with tables and goals, every figure it links exists, and where peers compute
the same thing their numbers agree.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("## Cases 1 and 5", "## Case 2", "## Case 3", "## Case 4", "## Case 6")
JAX_METHODS = ("odenets", "hand-written scan", "diffrax default", "diffrax tuned")
TOLERANCE = 1e-4


def run_bench(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "experiments.benchmarks", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def table_rows(text, ncols):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == ncols and not set(cells[0]) <= {"-"}:
            yield cells


def check_sizes_rows(text):
    """Every JAX peer's loss equals odenets' to 1e-4 relative at every quick size and integrator."""
    rows = {(c[0], c[1], c[2]): c for c in table_rows(text, 15) if c[0] in ("floor", "compute")}
    for size in ("floor", "compute"):
        for integ in ("rk4", "euler"):
            ref = float(rows[(size, integ, "odenets")][12])
            for method in JAX_METHODS:
                cells = rows[(size, integ, method)]
                assert re.fullmatch(r"[0-9.]+x", cells[8]), cells
                assert abs(float(cells[12]) - ref) <= TOLERANCE * abs(ref), (size, integ, method)
                assert float(cells[14]) <= TOLERANCE, cells  # gradients too


def test_benchmarks_quick(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = run_bench("--quick", "--torch-python", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert text.startswith("# odenets benchmarks (--quick")
    assert "jax " in text and "diffrax " in text and "usable CPUs" in text
    for heading in SECTIONS:
        assert heading in text, heading
    glance = text.split("## Goals at a glance", 1)[1].split("\n## ", 1)[0]
    verdicts = [c[2] for c in table_rows(glance, 3) if c[0] != "case"]
    assert len(verdicts) >= 8
    assert all(re.match(r"(MET|MISSED|NOT MEASURED|information)\b", v) for v in verdicts), verdicts
    assert "FAILED" not in glance
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(figures) >= 5
    for fig in figures:
        assert (out.parent / fig).stat().st_size > 1000, fig
    check_sizes_rows(text)


def test_bench_rejects_unknown_case_before_running(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = run_bench("--cases", "sizes,warp", "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "'warp'" in proc.stderr and "valid choices: sizes, adaptive, memory, compile, throughput" in proc.stderr
    assert not out.exists()
