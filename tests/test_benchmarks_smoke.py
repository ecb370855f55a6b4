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
CASE_NUMBERS = ("1, 5", "2", "3", "4", "6")
FIGURES = ("case1_ratios", "case5_floor", "case2_adaptive", "memory_vs_steps", "memory_time_ratio",
           "case4_compile", "case6_throughput", "case6_devices")
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
    """Every JAX peer's loss and gradients equal odenets' to 1e-4 relative at every quick size and integrator."""
    rows = {(c[0], c[1], c[2]): c for c in table_rows(text, 15) if c[0] in ("floor", "compute")}
    for size in ("floor", "compute"):
        for integ in ("rk4", "euler"):
            for method in JAX_METHODS:
                cells = rows[(size, integ, method)]
                assert re.fullmatch(r"[0-9.]+x", cells[8]), cells
                assert float(cells[14]) <= TOLERANCE, cells  # max over the loss and every gradient leaf


def test_benchmarks_quick(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = run_bench("--quick", "--torch-python", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert text.startswith("# odenets benchmarks (--quick")
    assert "jax " in text and "diffrax " in text and "usable CPUs" in text
    sections = {}
    for heading, number in zip(SECTIONS, CASE_NUMBERS, strict=True):
        assert heading in text, heading
        body = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "### Goals" in body, heading  # every case marks its goals in its own section
        sections[number] = body
    glance = text.split("## Goals at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [c for c in table_rows(glance, 3) if c[0] != "case"]
    for number in CASE_NUMBERS:
        assert any(c[0] == number for c in rows), f"no goals for case {number}"
    verdict = {c[1]: c[2] for c in rows}
    for goal, v in verdict.items():
        assert re.match(r"(MET|MISSED|NOT MEASURED|information)\b", v), (goal, v)
        if "torch" in goal:  # no torch peer in this run: its goals are not measured, never guessed
            assert v.startswith("NOT MEASURED"), (goal, v)
    # the constant-memory claims hold at any size
    for name in ("Adjoint", "Reversible"):
        flat = [v for g, v in verdict.items() if g.startswith(f"{name} temp bytes flat")]
        assert flat and flat[0].startswith("MET"), (name, flat)
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", text)
    assert sorted(Path(f).stem for f in figures) == sorted(FIGURES)
    for fig in figures:
        assert (out.parent / fig).stat().st_size > 1000, fig
    check_sizes_rows(sections["1, 5"])


def test_bench_rejects_unknown_case_before_running(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = run_bench("--cases", "sizes,warp", "--out", str(out), timeout=60)
    assert proc.returncode == 2
    assert "'warp'" in proc.stderr and "valid choices: sizes, adaptive, memory, compile, throughput" in proc.stderr
    assert not out.exists()
