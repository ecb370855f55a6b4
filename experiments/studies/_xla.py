"""Compiled functions with their memory, shared by the gradient studies (adjoint_accuracy, memory_depth).

Memory is XLA's temporary buffer size of the compiled program (`memory_analysis().temp_size_in_bytes`),
the measure experiments/benchmarks/memory.py uses: the scratch space a call needs beyond its arguments
and outputs, i.e. what a gradient strategy stores for its backward pass.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np


def compiled(fn, *args):
    """(jit(fn) compiled at `args`, its temporary bytes): one compile serves the memory and the calls."""
    executable = jax.jit(fn).lower(*args).compile()
    return executable, int(executable.memory_analysis().temp_size_in_bytes)


def median_seconds(executable, *args, repeats: int) -> float:
    """Median wall time of `repeats` calls (after one warm-up call), each waited for."""
    jax.block_until_ready(executable(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(executable(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flat(tree) -> np.ndarray:
    """Every leaf of a pytree, raveled into one float64 vector."""
    return np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(tree)])


def rel(a, b) -> float:
    """|a - b| / |b| (Euclidean norms over every leaf); inf where a is not finite."""
    a, b = flat(a), flat(b)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def loglog_slope(xs, ys) -> float:
    """The least-squares slope p of log y = p log x + c (nan with fewer than two positive points)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y > 0 and np.isfinite(y)]
    if len(pts) < 2:
        return float("nan")
    x, y = np.log(np.asarray(pts, np.float64)).T
    return float(np.polyfit(x, y, 1)[0])
