"""What every benchmark case shares: the machine, timing, agreement, torch peers, goals, output.

A case is a script `experiments/benchmarks/<case>.py` run as

    python <case>.py [--quick] [--md SECTION.md] [--json GOALS.json] [--fig-dir DIR] [--torch-python PY]

It measures, prints as it goes, writes one markdown section (`## Case N: ...`, tables, figure
links `figures/<name>.png`, a `### Goals` table) to --md, its goals as JSON to --json, and PNG
figures into --fig-dir. `python -m experiments.benchmarks` runs every case in its own process
(cases set process-wide options: XLA_FLAGS, EQX_ON_ERROR) and assembles RESULTS.md.

Timing rule for every case: compile, 2 warm-up calls, then the minimum of repeats, with
`jax.block_until_ready`; JAX peers in the same process, round robin; torch in its own
subprocess with torch.set_num_threads and OMP_NUM_THREADS equal to our usable CPUs.
"""

from __future__ import annotations

import os

os.environ.setdefault("EQX_ON_ERROR", "nan")  # must precede the import of equinox

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from torch_common import TORCH_MISSING  # noqa: E402  (the torch workers' exit status for "no torch")

HERE = Path(__file__).resolve().parent
NOT_INSTALLED = "torchdiffeq: not installed (pip install -e .[bench])"


# -- machine ------------------------------------------------------------------------------------
def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("odenets", "jax", "jaxlib", "flax", "optax", "diffrax", "equinox", "optimistix", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def device_name() -> str:
    d = jax.devices()[0]
    return f"{jax.default_backend()}: {getattr(d, 'device_kind', d.platform)} x{len(jax.devices())}"


def sgemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """The machine's float32 matmul rate through jit(jnp.matmul), n x n, min of `repeats`."""
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    for _ in range(3):
        jax.block_until_ready(mm(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# -- timing and agreement -----------------------------------------------------------------------
def time_all(fns: dict, args: tuple, repeats: int):
    """Compile + 2 warm-up calls each, then `repeats` round-robin timed calls.

    Returns (min seconds, compile seconds, last outputs), each a dict by name.
    """
    compile_s, outs = {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - start
        for _ in range(2):
            out = jax.block_until_ready(fn(*args))
        outs[name] = out
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    return best, compile_s, outs


def rel_discrepancy(a, b) -> float:
    """max over leaves of max|a - b| / max|b| (a scalar loss is a leaf too)."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return worst


def temp_bytes(fn, *args) -> int:
    """XLA's temporary buffer size of the compiled `fn` (a jax.jit function) at `args`."""
    return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def hlo_structure(fn, *args) -> dict:
    """Instruction counts of the optimised HLO of the compiled `fn` (a jax.jit function).

    loops: number of while loops; loop_body: instructions in their bodies (the per-step work,
    summed over the forward and backward loops, nested loops counted once each); total: all
    instructions of the program. Two programs with equal loop bodies do the same work per step.
    """
    import re

    text = fn.lower(*args).compile().as_text()
    comps, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            current = comps.setdefault(head.group(1), [])
        elif current is not None and " = " in line:
            current.append(line)
    bodies = re.findall(r"body=%?([\w.\-]+)", text)
    return {"loops": len(bodies), "loop_body": sum(len(comps.get(b, ())) for b in bodies),
            "total": sum(map(len, comps.values()))}


# -- torch peers --------------------------------------------------------------------------------
def run_torch(python: str | None, script: str, argv: list[str], threads: int, timeout: float = 1800):
    """Run a torch worker `HERE/script` under `python`; its last stdout line is JSON.

    Returns the parsed dict, or NOT_INSTALLED when `python` is None or the worker exits
    TORCH_MISSING (the case carries on without torch). A worker that fails otherwise raises
    RuntimeError with its error: a broken peer must fail the case, not read as a missing one.
    The worker gets OMP_NUM_THREADS / MKL_NUM_THREADS = threads in its environment and must
    call torch.set_num_threads(threads) itself.
    """
    if python is None:
        return NOT_INSTALLED
    # OpenMP's default (active) waiting, as users run torch: run nothing else meanwhile, or spinning
    # threads make torch's times erratic (OMP_WAIT_POLICY=PASSIVE in the environment steadies them)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [python, str(HERE / script), *argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"torch worker {script} under {python}: could not run ({exc})") from None
    if proc.returncode == TORCH_MISSING:
        return NOT_INSTALLED
    if proc.returncode != 0:
        raise RuntimeError(f"torch worker {script} failed (exit status {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_line(info) -> str:
    """One markdown bullet describing the torch peer (or why there is none)."""
    if not isinstance(info, dict):
        return f"- torch: {NOT_INSTALLED}"
    return (f"- torch {info.get('torch', '?')}, torchdiffeq {info.get('torchdiffeq', '?')}, "
            f"torch.set_num_threads({info.get('threads', '?')}), "
            f"OMP_NUM_THREADS={info.get('omp_num_threads', '?')}")


# -- goals --------------------------------------------------------------------------------------
@dataclass
class Goal:
    """One goal of the issue: `value` against `target` (at_least: value >= target, else <=)."""

    case: str
    goal: str
    value: float | None
    target: float
    at_least: bool
    unit: str = "x"
    where: str = ""
    info: bool = False  # a measurement reported beside the goals, with no target of its own

    @property
    def met(self) -> bool | None:
        if self.info or self.value is None or not np.isfinite(self.value):
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def verdict(self) -> str:
        if self.info and self.value is not None:
            at = f" at {self.where}" if self.where else ""
            return f"information (no goal): {self.value:.2f}{self.unit}{at}"
        if self.met is None:
            return "NOT MEASURED" + (f" ({self.where})" if self.where else "")
        rel = "\u2265" if self.at_least else "\u2264"
        at = f" at {self.where}" if self.where else ""
        if self.met:
            return f"MET{at}: {self.value:.2f}{self.unit} ({rel} {self.target:.2f}{self.unit})"
        gap = abs(self.value - self.target) / abs(self.target)
        side = "short of" if self.at_least else "over"
        return (f"MISSED{at}: {self.value:.2f}{self.unit}, goal {rel} {self.target:.2f}{self.unit} "
                f"({100 * gap:.0f}% {side} it)")

    def row(self) -> dict:
        return dict(asdict(self), met=self.met, verdict=self.verdict)


def goals_table(goals: list[Goal]) -> list[str]:
    lines = ["### Goals", "", "| goal | verdict |", "|---|---|"]
    lines += [f"| {g.goal} | {g.verdict} |" for g in goals]
    return lines


# -- output -------------------------------------------------------------------------------------
def case_parser(doc: str) -> argparse.ArgumentParser:
    """The options every case takes (add your own after)."""
    parser = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    parser.add_argument("--md", default=None, help="write this case's markdown section here")
    parser.add_argument("--json", default=None, help="write this case's goals (JSON) here")
    parser.add_argument("--fig-dir", default=None, help="write PNG figures here (default: none)")
    parser.add_argument("--torch-python", default=os.environ.get("ODENETS_TORCH_PYTHON", sys.executable),
                        help="interpreter with torch + torchdiffeq for torch peers "
                             "(default $ODENETS_TORCH_PYTHON, else this one); 'none' to skip")
    return parser


def torch_python(opts) -> str | None:
    return None if str(opts.torch_python).lower() == "none" else opts.torch_python


def md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def figure(fig_dir: str | None, name: str, draw) -> str | None:
    """Draw with `draw(ax_or_fig)` -> PNG `fig_dir/name.png`; returns the markdown image line."""
    if not fig_dir:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(fig_dir).mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(7, 4.2), dpi=110)
    draw(fig)
    fig.tight_layout()
    path = Path(fig_dir) / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return f"![{name}](figures/{name}.png)"


def write_outputs(opts, lines: list[str], goals: list[Goal], extra: dict | None = None) -> None:
    """Write the markdown section (--md) and the goals plus `extra` as JSON (--json)."""
    text = "\n".join(lines).rstrip() + "\n"
    if opts.md:
        Path(opts.md).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.md).write_text(text)
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps({"goals": [g.row() for g in goals], **(extra or {})},
                                              indent=1, default=str))
    for g in goals:
        print(f"goal [{g.case}] {g.goal}: {g.verdict}")
