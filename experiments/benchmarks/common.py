"""What every case shares: the machine, timing (compile, 2 warm-up calls, then the minimum of round-robin repeats
under jax.block_until_ready), agreement, goals, the torch worker, JSON, markdown and figures."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TORCH_MISSING = 3  # exit status of a torch worker that cannot import torch / torchdiffeq
LIBS = ("odenets", "jax", "jaxlib", "flax", "optax", "diffrax", "equinox", "optimistix", "numpy")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def device_name() -> str:
    d = jax.devices()[0]
    return f"{jax.default_backend()}: {getattr(d, 'device_kind', d.platform)} x{len(jax.devices())}"


def machine() -> dict:
    """Where and with what a run measured (the header of RESULTS.md)."""
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists()
                    else "")
    return {"cpu": cpu[1] if cpu else platform.processor(), "arch": platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "device": device_name(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "versions": {"python": platform.python_version(), **{name: version(name) for name in LIBS}}}


def sgemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """The float32 matmul rate through jit(jnp.matmul), n x n, min of `repeats`: 2 n^3 / t."""
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (1, 2))
    return 2 * n**3 / time_all({"mm": jax.jit(jnp.matmul)}, (a, b), repeats)[0]["mm"] / 1e9


def time_all(fns: dict, args: tuple, repeats: int):
    """Compile + 2 warm-up calls each, then `repeats` round-robin timed calls: (min s, first-call s, outputs)."""
    first, outs, best = {}, {}, dict.fromkeys(fns, math.inf)
    for name, fn in fns.items():
        start = time.perf_counter()
        outs[name] = jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - start
        for _ in range(2):
            outs[name] = jax.block_until_ready(fn(*args))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    return best, first, outs


def rel_discrepancy(a, b) -> float:
    """max over leaves of max|a - b| / max|b| (a scalar loss is a leaf too)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max((float(np.max(np.abs(np.float64(x) - np.float64(y))) / max(np.max(np.abs(np.float64(y))), 1e-30))
                for x, y in pairs), default=0.0)


def temp_bytes(fn, *args) -> int:
    """XLA's temporary buffer size of the compiled `fn` (a jax.jit function) at `args`."""
    return int(fn.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def hlo_structure(fn, *args) -> dict:
    """HLO instruction counts of the jitted `fn`: while loops, their bodies (per-step work), the whole program."""
    text, comps, current = fn.lower(*args).compile().as_text(), {}, None
    for line in text.splitlines():
        if head := re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line):
            current = comps.setdefault(head[1], [])
        elif current is not None and " = " in line:
            current.append(line)
    bodies = re.findall(r"body=%?([\w.\-]+)", text)
    return {"loops": len(bodies), "loop_body": sum(len(comps.get(b, ())) for b in bodies),
            "total": sum(map(len, comps.values()))}


def run_torch(python: str | None, task: str, opts: dict, threads: int | None = None) -> dict | None:
    """`python -m experiments.benchmarks.torch_worker task threads opts-as-JSON` from the repository root:
    the JSON of its last line, or None when `python` is None or lacks torch / torchdiffeq. Any other
    failure raises: a broken peer must fail the case, not read as a missing one."""
    if python is None:
        return None
    threads = threads or usable_cpus()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [python, "-m", "experiments.benchmarks.torch_worker", task, str(threads), json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if proc.returncode == TORCH_MISSING:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"torch worker {task} failed (exit status {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Goal:
    """`value` against `target` (at_least: value >= target, else value <= target). info: a number shown
    beside the goals with no target of its own. A missing or non-finite value is NOT MEASURED, never met."""

    goal: str
    value: float | None
    target: float
    at_least: bool
    where: str = ""
    info: bool = False

    @property
    def met(self) -> bool | None:
        if self.info or self.value is None or not math.isfinite(self.value):
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    @property
    def verdict(self) -> str:
        at, rel = f" at {self.where}" if self.where else "", "\u2265" if self.at_least else "\u2264"
        if self.info and self.value is not None:
            return f"information (no goal): {self.value:.2f}x{at}"
        if self.met is None:
            return "NOT MEASURED" + (f" ({self.where})" if self.where else "")
        if self.met:
            return f"MET{at}: {self.value:.2f}x ({rel} {self.target:.2f}x)"
        gap = abs(self.value - self.target) / abs(self.target)
        return (f"MISSED{at}: {self.value:.2f}x, goal {rel} {self.target:.2f}x "
                f"({100 * gap:.0f}% {'short of' if self.at_least else 'over'} it)")


def goals_table(goals: list[Goal]) -> str:
    return md_table(["goal", "verdict"], [[g.goal, g.verdict] for g in goals])


def save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def rows(body: list[list]) -> str:
    """Markdown table rows (the header lives in the template)."""
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in body)


def md_table(header: list[str], body: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)] + ([rows(body)] if body else []))


def template(case: str) -> dict[str, str]:
    """templates/<case>.md: the section, then named blocks each opened by a line `@@ name`."""
    parts = re.split(r"^@@ (\w+)\n", (HERE / "templates" / f"{case}.md").read_text(), flags=re.M)
    return {"section": parts[0].strip(), **{k: v.strip() for k, v in zip(parts[1::2], parts[2::2])}}


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    """`value` formatted, or "-" when it was not measured."""
    return "-" if value is None else format(value, spec) + suffix


def fmt_bytes(b) -> str:
    if b is None:
        return "-"
    scale, unit = next(((s, u) for s, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if abs(b) >= s), (1, "B"))
    return f"{b / scale:.3g} {unit}" if scale > 1 else f"{b:.0f} B"


def figure(fig_dir: Path, name: str, title: str, *, bars: dict | None = None, lines: dict | None = None,
           groups=(), xlabel="", ylabel="", log=True, horizontal=False, ref=None, annotate=False) -> None:
    """fig_dir/name.png: grouped bars ({series: a value per group}) or lines ({series: (xs, ys)})."""
    import matplotlib.pyplot as plt  # the Agg backend: MPLBACKEND, set by the package

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (label, values) in enumerate((bars or {}).items()):
        at = np.arange(len(groups)) + (i - (len(bars) - 1) / 2) * 0.8 / len(bars)
        drawn = (ax.barh if horizontal else ax.bar)(at, [np.nan if v is None else v for v in values],
                                                     0.8 / len(bars), label=label)
        ax.bar_label(drawn, fmt="%.0f", fontsize=7) if annotate else None
    for label, (xs, ys) in (lines or {}).items():
        ax.plot(xs, ys, "o-", label=label)
    (ax.axvline if horizontal else ax.axhline)(ref, color="k", lw=0.8) if ref is not None else None
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale="log" if log and (horizontal or lines) else "linear",
           yscale="log" if log and not horizontal else "linear")
    if bars:  # after the scales: setting a scale resets its axis' ticks to numbers
        (ax.set_yticks if horizontal else ax.set_xticks)(range(len(groups)), groups, fontsize=6.5,
                                                         rotation=0 if horizontal else 15)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_dir / f"{name}.png")
    plt.close(fig)
