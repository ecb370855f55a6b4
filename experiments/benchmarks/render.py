"""RESULTS.md and the figures, rendered from results/*.json through templates/*.md alone.

results/run.json says when, where and which cases ran; results/<case>.json holds one case's
measurements. Goals and verdicts are computed here from the measurements, never stored.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from . import CASES, common


def case_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def load(out: Path) -> tuple[dict, dict[str, dict]]:
    run = json.loads((out / "results" / "run.json").read_text())
    found = {c: out / "results" / f"{c}.json" for c in run["cases"]}
    return run, {c: json.loads(p.read_text()) for c, p in found.items() if p.exists()}


def header(run: dict, data: dict[str, dict]) -> str:
    m = run["machine"]
    blocks = common.template("header")
    gpu = "" if m["device"].startswith("gpu") else blocks["no_gpu"]
    note = blocks["transcribed"].format(**run) if run.get("transcribed_from") else ""
    times = ", ".join(f"{c} {d['wall_seconds']:.0f} s" for c, d in data.items())
    return blocks["section"].format(
        quick=" " + blocks["quick"] if run["quick"] else "", cmd="python -m experiments.benchmarks"
        + " --quick" * run["quick"], date=run["date"], minutes=f"{run['wall_seconds'] / 60:.1f}", **m,
        libs=", ".join(f"{k} {v}" for k, v in m["versions"].items()), torch=run["torch"], no_gpu=gpu,
        transcribed=note, case_times=times)


def render(out: Path, draw: bool = True) -> Path:
    """Write out/RESULTS.md (and out/figures/*.png when `draw`) from out/results/."""
    run, data = load(out)
    glance, sections = [], []
    for case in run["cases"]:
        if case not in data:
            glance.append([CASES[case], f"(case {case})", f"FAILED (exit status {run['failed'].get(case)})"])
            sections.append(f"## Case {CASES[case]}: {case}\n\n**This case failed; see its output.**")
            continue
        mod, d = case_module(case), data[case]
        goals = mod.goals(d)
        glance += [[CASES[case], g.goal, g.verdict] for g in goals]
        sections.append(common.template(case)["section"].format(**mod.fields(d), goals=common.goals_table(goals)))
        if draw:
            mod.figures(d, out / "figures")
    text = re.sub(r"\n{3,}", "\n\n", "\n\n".join([header(run, data), "## Goals at a glance",
                        common.md_table(["case", "goal", "verdict"], glance), *sections]))
    path = out / "RESULTS.md"
    path.write_text(text.rstrip() + "\n")
    return path
