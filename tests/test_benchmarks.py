"""The benchmark harness (experiments/benchmarks): every case measures at a tiny size and agrees with
its peers, RESULTS.md is what rendering results/*.json gives, and goals are judged, never assumed met.

Benchmarks are never timed tests: times here only have to be finite and positive. Each case runs in
its own process (`python -m experiments.benchmarks --measure CASE --config JSON`), as the runner starts it.
"""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.benchmarks.__main__ as runner
from experiments.benchmarks import CASES, adaptive, common, memory, scaleout, sizes, throughput

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "benchmarks"
TINY = {
    "sizes": dict(sizes=[["floor", 2, 1, 4, 5, 1]], integrators=["rk4", "euler"]),
    "adaptive": dict(batch=2, t1=1.0, groups=[["dopri5", "final"]], modes=["forward", "adjoint"], budget_s=0.01,
                     min_repeats=1, max_repeats=1, retime=True, torch=dict(forward=1, gradient=1, budget_s=0.1)),
    "memory": dict(batch=2, width=2, hidden=4, steps=[4, 9], timed=[9], torch_timed=[9], diffrax_steps=[4, 9],
                   repeats=1, torch_repeats=1),
    "compile": dict(width=4, hidden=4, batch=2, depths=[2, 4], max_unrolled=2),
    "throughput": dict(pairs=[["odenet", "mnist1d"]], batch={"mnist1d": 4, "cifar": 2}, steps={"mnist1d": 4,
                                                                                               "cifar": 4},
                       devices=[1, 2], device_nets=["odenet"], repeats=1, model={"width": 4, "depth": 2},
                       shapes={"mnist1d": [12, 1]}),
    "scaleout": dict(processes=[1, 2], batch=8, steps=4, width=4, depth=2, n_train=16),
}
VERDICT = re.compile(r"(MET|MISSED|NOT MEASURED)\b|information \(no goal\): ")
SECTIONS = {"sizes": "## Cases 1 and 5", "adaptive": "## Case 2", "memory": "## Case 3", "compile": "## Case 4",
            "throughput": "## Case 6", "scaleout": "## Case 8"}


def numbers(tree):
    """Every number in a JSON tree."""
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def table_rows(text):
    """The body rows of the markdown tables in text, split at "|"."""
    lines = text.splitlines()
    return [line.split("|") for line in lines if line.startswith("| ") and not line.startswith("| case")]


def bench(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "experiments.benchmarks", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_tiny_configs_cover_every_case():
    assert set(TINY) == set(CASES) == set(SECTIONS)


@pytest.mark.slow  # about a minute for all cases; CI runs it with the slow tests
@pytest.mark.parametrize("case", list(CASES))
def test_case_measures_at_a_tiny_size(case, tmp_path):
    done = bench("--measure", case, "--config", json.dumps(TINY[case]), "--out", str(tmp_path), "--torch-python",
                 "none")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "results" / f"{case}.json").read_text())  # strict JSON: no NaN or Infinity
    assert data["case"] == case and data["config"] == TINY[case]
    assert all(math.isfinite(x) for x in numbers(data))
    mod = runner.case_module(case)
    goals = mod.goals(data)
    assert goals and all(VERDICT.match(g.verdict) for g in goals)
    assert all(g.met is None for g in goals if "torch" in g.goal)  # no torch peer: not measured, never guessed
    section = common.template(case)["section"].format(**mod.fields(data), goals=common.goals_table(goals))
    assert section.startswith(SECTIONS[case]) and "### Goals" in section
    mod.figures(data, tmp_path / "figures")
    assert all(p.stat().st_size > 1000 for p in (tmp_path / "figures").glob("*.png"))
    agreement = {  # the peers compute the same thing
        "sizes": lambda: max(r["grad_rel"] for r in data["rows"]) <= sizes.TOLERANCE,
        "adaptive": lambda: all(adaptive.agrees(r) for r in data["rows"]),
        "memory": lambda: all(d <= memory.METHODS[k][1] for k, (d, _) in data["agreement"].items()),
        "compile": lambda: data["agreement"] <= 1e-5,
        "throughput": lambda: all(r["rel_checked"] <= throughput.TOL_DEVICES for r in data["devices"]),
        "scaleout": lambda: all(r["rel_checked"] <= scaleout.TOL for r in data["rows"]),
    }
    assert agreement[case]()


def test_results_md_is_rendered_from_the_json(tmp_path):
    shutil.copytree(BENCH / "results", tmp_path / "results")
    text = runner.render(tmp_path).read_text()
    assert text == (BENCH / "RESULTS.md").read_text()  # the committed RESULTS.md is the JSON's rendering
    assert "{" not in text.replace("{odenet,resnet}", "").replace("{1d,2d}", "")  # every placeholder filled
    ran = json.loads((BENCH / "results" / "run.json").read_text())["cases"]  # what the committed run measured
    for case in ran:
        body = text.split(SECTIONS[case], 1)[1].split("\n## ", 1)[0]
        assert "### Goals" in body and "| goal | verdict |" in body, case
    glance = text.split("## Goals at a glance", 1)[1].split("\n## ", 1)[0]
    assert {row[1].strip() for row in table_rows(glance)} == {CASES[c] for c in ran}
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(figures) == 8 + ("scaleout" in ran) and all((tmp_path / f).stat().st_size > 1000 for f in figures)


def test_verdicts_follow_the_numbers():
    data = json.loads((BENCH / "results" / "sizes.json").read_text())
    assert sizes.goals(data)[0].verdict.startswith("MET")
    for r in data["rows"]:  # odenets 20% slower than the hand-written scan
        r["seconds"] *= 1.2 if r["method"] == "odenets" else 1.0
    assert sizes.goals(data)[0].verdict.startswith("MISSED")
    mem = json.loads((BENCH / "results" / "memory.json").read_text())
    assert memory.goals(mem)[0].met is True
    mem["temp"][memory.ADJOINT]["4096"] *= 10  # Adjoint memory grows with the step count
    assert memory.goals(mem)[0].met is False
    assert common.Goal("g", 1.0, 1.5, True).verdict.startswith("MISSED")
    assert common.Goal("g", 2.0, 1.5, True).verdict.startswith("MET")
    assert common.Goal("g", float("nan"), 1.5, True).verdict == "NOT MEASURED"
    assert common.Goal("g", None, 1.5, False, where="no peer").verdict == "NOT MEASURED (no peer)"


def test_unknown_case_is_refused_before_running(tmp_path):
    done = bench("--cases", "sizes,warp", "--out", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert "'warp'" in done.stderr and f"valid choices: {', '.join(CASES)}" in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_harness_end_to_end(tmp_path):
    done = bench("--quick", "--torch-python", "none", "--out", str(tmp_path), timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# odenets benchmarks (--quick")
    assert all(heading in text for heading in SECTIONS.values())
    glance = text.split("## Goals at a glance", 1)[1].split("\n## ", 1)[0]
    verdicts = {row[2].strip(): row[3].strip() for row in table_rows(glance)}
    assert all(VERDICT.match(v) for v in verdicts.values())
    for name in ("Adjoint", "Reversible"):  # constant memory holds at any size
        assert next(v for g, v in verdicts.items() if g.startswith(f"{name} temp bytes flat")).startswith("MET")
