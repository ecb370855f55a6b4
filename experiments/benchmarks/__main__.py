"""Run the benchmark cases, each in its own process (cases set process-wide options such as XLA_FLAGS), into
DIR/results/*.json, then render DIR/RESULTS.md and DIR/figures/ from the JSON alone through templates/*.md:
goals and verdicts are computed from the measurements, never stored. --quick numbers measure nothing."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import CASES, common


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (numbers measure nothing)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, help="default experiments/benchmarks (--quick: runs/benchmarks-quick)")
    parser.add_argument("--torch-python", default=os.environ.get("ODENETS_TORCH_PYTHON", sys.executable),
                        help="python with torch + torchdiffeq ($ODENETS_TORCH_PYTHON, else this); 'none' skips")
    parser.add_argument("--render-only", action="store_true", help="render DIR/results/*.json, measure nothing")
    parser.add_argument("--measure", choices=CASES, help="measure one case into DIR/results/ (the runner's child)")
    parser.add_argument("--config", type=json.loads, help="with --measure: the case's config as JSON")
    opts = parser.parse_args(argv)
    opts.cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    if not opts.cases or set(opts.cases) - set(CASES):
        bad = ", ".join(repr(c) for c in opts.cases if c not in CASES) or "(none given)"
        parser.error(f"unknown case(s) {bad}; valid choices: {', '.join(CASES)}")
    opts.torch_python = None if str(opts.torch_python).lower() == "none" else opts.torch_python
    opts.out = (opts.out or (Path("runs") / "benchmarks-quick" if opts.quick else common.HERE)).resolve()
    return opts


def case_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def render(out: Path, draw: bool = True) -> Path:
    """out/RESULTS.md (and out/figures/*.png when `draw`) from out/results/*.json."""
    run, blocks = json.loads((out / "results" / "run.json").read_text()), common.template("header")
    data = {c: json.loads(p.read_text()) for c in run["cases"] if (p := out / "results" / f"{c}.json").exists()}
    torch = next((d["torch"] for d in data.values() if d.get("torch")), None)
    m, glance, sections = run["machine"], [], []
    for case in run["cases"]:
        if case not in data:
            glance.append([CASES[case], f"(case {case})", f"FAILED (exit status {run['failed'].get(case)})"])
            sections.append(blocks["failed"].format(numbers=CASES[case], case=case))
            continue
        mod = case_module(case)
        goals = mod.goals(data[case])
        glance += [[CASES[case], g.goal, g.verdict] for g in goals]
        sections.append(common.template(case)["section"].format(**mod.fields(data[case]),
                                                                goals=common.goals_table(goals)))
        mod.figures(data[case], out / "figures") if draw else None
    head = blocks["section"].format(
        quick=" " + blocks["quick"] if run["quick"] else "", cmd="python -m experiments.benchmarks"
        + " --quick" * run["quick"], date=run["date"], minutes=f"{run['wall_seconds'] / 60:.1f}", **m,
        libs=", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        torch=blocks["torch"].format(**torch, python=run["torch_python"]) if torch else blocks["no_torch"],
        no_gpu="" if m["device"].startswith("gpu") else blocks["no_gpu"],
        transcribed=blocks["transcribed"].format(**run) if run.get("transcribed_from") else "",
        case_times=", ".join(f"{c} {d['wall_seconds']:.0f} s" for c, d in data.items()))
    text = "\n\n".join([head, "## Goals at a glance", common.md_table(["case", "goal", "verdict"], glance),
                        *sections])
    (out / "RESULTS.md").write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n")
    return out / "RESULTS.md"


def main(argv=None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    if opts.measure:
        mod, start = case_module(opts.measure), time.perf_counter()
        data = mod.measure(opts.config or (mod.QUICK if opts.quick else mod.FULL), opts.torch_python)
        common.save_json(opts.out / "results" / f"{opts.measure}.json", {
            "case": opts.measure, "quick": opts.quick, "wall_seconds": time.perf_counter() - start, **data})
        return 0
    if not opts.render_only:
        python, start, failed = opts.torch_python, time.perf_counter(), {}
        for case in opts.cases:
            print(f"\n===== case {CASES[case]}: {case}", flush=True)
            (opts.out / "results" / f"{case}.json").unlink(missing_ok=True)
            rc = subprocess.call([sys.executable, "-m", __package__, "--measure", case, "--out", str(opts.out),
                                  "--torch-python", str(python)] + ["--quick"] * opts.quick, cwd=common.ROOT)
            failed.update({case: rc} if rc else {})
        common.save_json(opts.out / "results" / "run.json", {
            "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "wall_seconds": time.perf_counter() - start,
            "quick": opts.quick, "cases": opts.cases, "failed": failed, "machine": common.machine(),
            "torch_python": python})
    print(f"wrote {render(opts.out)} and {opts.out / 'figures'}/")
    return 1 if not opts.render_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
